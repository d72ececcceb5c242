use super::*;

#[test]
fn empty_policy_grants_nothing_and_is_valid() {
    let policy: Policy = toml::from_str("").unwrap();
    assert!(policy.effects.is_empty());
    assert!(!policy.allows_effect("erp.post-invoice"));
    assert_eq!(policy.validate(), Ok(()));
}

#[test]
fn unknown_field_is_an_error_not_ignored() {
    let err = toml::from_str::<Policy>("effect = [\"x\"]").unwrap_err();
    assert!(err.to_string().contains("unknown field `effect`"), "{err}");
}

#[test]
fn reports_every_invalid_entry() {
    let policy: Policy = toml::from_str(
        "effects = [\"Bad Kind\", \"ok.kind\"]\n[limits]\nmemory_bytes = 0\ntimeout_ms = 0\n",
    )
    .unwrap();
    let problems = policy.validate().unwrap_err();
    let fields: Vec<_> = problems.iter().map(|p| dotted(&p.path)).collect();
    assert_eq!(
        fields,
        vec!["effects", "limits.memory_bytes", "limits.timeout_ms"]
    );
}

#[test]
fn effect_kind_syntax() {
    assert!(is_valid_effect_kind("erp.post-invoice"));
    assert!(is_valid_effect_kind("files.export_v2"));
    assert!(!is_valid_effect_kind(""));
    assert!(!is_valid_effect_kind("9lives"));
    assert!(!is_valid_effect_kind("ERP.post"));
    assert!(!is_valid_effect_kind("a b"));
}

#[test]
fn grants_parse_and_bad_grants_are_each_named() {
    let policy: Policy = toml::from_str(
        r#"
        digest = "sha256:nothex"
        env = ["LANG", "9BAD"]
        [[fs]]
        host = "relative/dir"
        guest = "/data"
        [[fs]]
        host = "/definitely/not/here"
        guest = "/data/../etc"
        mode = "rw"
        [[http]]
        host = "https://api.example.com"
        [[http]]
        host = "*.example.com:443"
        methods = ["GET", "get"]
        "#,
    )
    .unwrap();
    assert_eq!(policy.fs[1].mode, FsMode::Rw);
    assert_eq!(
        policy.fs[0].mode,
        FsMode::Ro,
        "read-only unless said otherwise"
    );
    let problems: Vec<String> = policy
        .validate()
        .unwrap_err()
        .iter()
        .map(|p| dotted(&p.path))
        .collect();
    assert_eq!(
        problems,
        vec![
            "digest",
            "env",
            "fs[0].host",
            "fs[1].host",
            "fs[1].guest",
            "http[0].host",
            "http[1].methods"
        ]
    );
    let err = toml::from_str::<Policy>("[[fs]]\nhost = \"/tmp\"\nguest = \"/t\"\nmode = \"rwx\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("rwx"), "{err}");
}

#[test]
fn http_grants_match_host_port_and_method() {
    let policy: Policy = toml::from_str(
        r#"
        [[http]]
        host = "127.0.0.1:8080"
        [[http]]
        host = "*.example.com"
        methods = ["GET", "POST"]
        "#,
    )
    .unwrap();
    assert_eq!(policy.check_http("127.0.0.1", 8080, "GET"), Ok(0));
    assert_eq!(policy.check_http("127.0.0.1", 8080, "HEAD"), Ok(0));
    let post = policy.check_http("127.0.0.1", 8080, "POST").unwrap_err();
    assert!(post.contains("POST") && post.contains("methods"), "{post}");
    assert!(
        policy.check_http("127.0.0.1", 8081, "GET").is_err(),
        "other port"
    );
    assert!(
        policy.check_http("127.0.0.2", 8080, "GET").is_err(),
        "other host"
    );
    assert_eq!(policy.check_http("api.example.com", 443, "POST"), Ok(1));
    assert_eq!(policy.check_http("A.B.Example.COM", 80, "GET"), Ok(1));
    assert!(
        policy.check_http("example.com", 443, "GET").is_err(),
        "wildcard needs a subdomain"
    );
    assert!(policy.check_http("evilexample.com", 443, "GET").is_err());
    assert!(
        policy.check_http("api.example.com", 8443, "GET").is_err(),
        "default ports only"
    );
}

#[test]
fn digest_pins_accept_prefixed_and_bare_hex() {
    let hex = "AB".repeat(32);
    let policy: Policy = toml::from_str(&format!("digest = \"sha256:{hex}\"")).unwrap();
    assert_eq!(policy.validate(), Ok(()));
    assert_eq!(policy.pinned_digest(), Some(hex.to_ascii_lowercase()));
}

#[test]
fn async_recording_is_refused_for_a_tool_granted_effects() {
    let policy: Policy = toml::from_str("record = \"async\"\n").unwrap();
    assert_eq!(policy.record, Record::Async);
    assert_eq!(policy.validate(), Ok(()), "a read-only tool may");
    let policy: Policy =
        toml::from_str("record = \"async\"\neffects = [\"erp.post-invoice\"]\n").unwrap();
    let problems = policy.validate().unwrap_err();
    assert_eq!(dotted(&problems[0].path), "record");
    assert!(
        problems[0].problem.contains("remove `record = \"async\"`")
            && problems[0].problem.contains("effects (erp.post-invoice)"),
        "{}",
        problems[0].problem
    );
    // Anything else that lets a tool change the world is refused the same way.
    let dir = tempfile::tempdir().unwrap();
    let policy: Policy = toml::from_str(&format!(
        "record = \"async\"\n[[fs]]\nhost = {:?}\nguest = \"/out\"\nmode = \"rw\"\n[[http]]\nhost = \"api.example.com:443\"\nmethods = [\"GET\", \"POST\"]\n",
        dir.path()
    ))
    .unwrap();
    let problem = &policy.validate().unwrap_err()[0].problem;
    assert!(
        problem.contains("`/out` read-write") && problem.contains("POST to api.example.com:443"),
        "{problem}"
    );
    let err = toml::from_str::<Policy>("record = \"later\"\n").unwrap_err();
    assert!(
        err.to_string().contains("expected `sync` or `async`"),
        "{err}"
    );
}
