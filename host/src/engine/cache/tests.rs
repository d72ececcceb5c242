use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use wasmtime::Store;
use wasmtime::component::Linker;

/// Two components with the same interface and different code: `answer` returns 1 or 2.
const A: &str = r#"(component
    (core module $m (func (export "answer") (result i32) (i32.const 1)))
    (core instance $i (instantiate $m))
    (func (export "answer") (result u32) (canon lift (core func $i "answer"))))"#;
const B: &str = r#"(component
    (core module $m (func (export "answer") (result i32) (i32.const 2)))
    (core instance $i (instantiate $m))
    (func (export "answer") (result u32) (canon lift (core func $i "answer"))))"#;

/// The uid of a user other than this one, for files the tests hand over with `chown`.
const NOBODY: u32 = 65534;

fn engine() -> Engine {
    Engine::default()
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn answer(engine: &Engine, component: &Component) -> u32 {
    let mut store = Store::new(engine, ());
    let instance = Linker::new(engine)
        .instantiate(&mut store, component)
        .unwrap();
    let f = instance
        .get_typed_func::<(), (u32,)>(&mut store, "answer")
        .unwrap();
    f.call(&mut store, ()).unwrap().0
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> String {
    format!("{:04o}", fs::metadata(path).unwrap().mode() & 0o7777)
}

/// The uid this process creates files as (its effective uid), learnt from a file it made.
fn my_uid(made: &Path) -> u32 {
    fs::metadata(made).unwrap().uid()
}

/// What another local user can do with a cache directory they can write, or a key they can
/// read: plant a 32-byte key they know in `dir`, and under it an artifact of B's native
/// code, named and authenticated as the artifact of A. Returns A's digest.
fn plant_forgery(dir: &Path, engine: &Engine) -> String {
    let key = [7u8; 32];
    fs::write(dir.join(KEY_FILE), key).unwrap();
    let attacker = ArtifactCache {
        dir: dir.to_owned(),
        key,
        engine_hash: engine_hash(engine),
    };
    let digest_a = digest(A.as_bytes());
    let forged = Component::new(engine, B).unwrap().serialize().unwrap();
    let tag = attacker.artifact_mac(&digest_a, &forged);
    fs::write(
        attacker.artifact_path(&digest_a),
        [&forged[..], tag.as_bytes()].concat(),
    )
    .unwrap();
    digest_a
}

/// Opens `dir` as a cache and expects a refusal whose message contains every one of
/// `expected`; if the cache is opened instead, says what loading A then ran.
fn refused(dir: &Path, engine: &Engine, expected: &[&str]) -> CacheError {
    match ArtifactCache::open(dir, engine) {
        Err(e) => {
            let text = e.to_string();
            for part in expected {
                assert!(text.contains(part), "{part:?} missing from: {text}");
            }
            e
        }
        Ok(cache) => {
            let digest_a = digest(A.as_bytes());
            let (component, outcome) = cache
                .load_or_compile(engine, &digest_a, A.as_bytes())
                .unwrap();
            panic!(
                "cache {} was trusted; loading A ({outcome:?}) answered {} (A answers 1, B 2)",
                dir.display(),
                answer(engine, &component)
            );
        }
    }
}

#[test]
fn forged_artifact_under_a_key_planted_in_a_world_writable_dir_never_runs() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    plant_forgery(&dir, &engine);
    let shown = dir.display().to_string();
    let err = refused(
        &dir,
        &engine,
        &[&shown, "0777", &format!("chmod 700 {shown}"), "or none"],
    );
    assert!(
        matches!(
            err,
            CacheError::UntrustedDir {
                exposure: Exposure::Mode { mode: 0o777 },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn forged_artifact_under_a_key_others_can_read_never_runs() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    plant_forgery(&dir, &engine);
    let key = dir.join(KEY_FILE);
    chmod(&key, 0o644);
    let shown = key.display().to_string();
    let err = refused(
        &dir,
        &engine,
        &[&shown, "0644", &format!("chmod 600 {shown}"), "or none"],
    );
    assert!(
        matches!(
            err,
            CacheError::UntrustedKey {
                exposure: Exposure::Mode { mode: 0o644 },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn group_writable_cache_dir_is_refused() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o770);
    let err = refused(&dir, &engine, &["0770", "chmod 700"]);
    assert!(
        matches!(
            err,
            CacheError::UntrustedDir {
                exposure: Exposure::Mode { mode: 0o770 },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn cache_dir_owned_by_another_user_is_refused() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let me = my_uid(tmp.path());
    let (dir, owner) = if me == 0 {
        // Root can hand a private directory to another user.
        let dir = tmp.path().join("cache");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o700);
        std::os::unix::fs::chown(&dir, Some(NOBODY), None).unwrap();
        (dir, NOBODY)
    } else {
        // Anyone else already has a directory owned by another user: the root directory.
        let root = PathBuf::from("/");
        let owner = fs::metadata(&root).unwrap().uid();
        assert_ne!(
            owner, me,
            "the test needs a directory owned by someone else"
        );
        (root, owner)
    };
    let err = refused(
        &dir,
        &engine,
        &[&format!("owned by uid {owner}"), &format!("uid {me}")],
    );
    assert!(
        matches!(err, CacheError::UntrustedDir { exposure: Exposure::Owner { owner: o, user: u }, .. } if o == owner && u == me),
        "{err:?}"
    );
}

#[test]
fn cache_key_owned_by_another_user_is_refused() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let me = my_uid(tmp.path());
    let dir = tmp.path().join("cache");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let key = dir.join(KEY_FILE);
    let owner = if me == 0 {
        fs::write(&key, [7u8; 32]).unwrap();
        chmod(&key, 0o600);
        std::os::unix::fs::chown(&key, Some(NOBODY), None).unwrap();
        NOBODY
    } else {
        // Without root, a key owned by someone else is reached through a link to their file.
        let theirs = Path::new("/etc/passwd");
        std::os::unix::fs::symlink(theirs, &key).unwrap();
        let owner = fs::metadata(theirs).unwrap().uid();
        assert_ne!(owner, me, "the test needs a file owned by someone else");
        owner
    };
    let err = refused(
        &dir,
        &engine,
        &[&key.display().to_string(), &format!("owned by uid {owner}")],
    );
    assert!(
        matches!(err, CacheError::UntrustedKey { exposure: Exposure::Owner { owner: o, user: u }, .. } if o == owner && u == me),
        "{err:?}"
    );
}

#[test]
fn cache_key_that_is_not_a_regular_file_is_refused() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    fs::create_dir_all(dir.join(KEY_FILE)).unwrap();
    chmod(&dir, 0o700);
    let err = refused(&dir, &engine, &["not a regular file"]);
    assert!(
        matches!(
            err,
            CacheError::UntrustedKey {
                exposure: Exposure::Kind,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn new_cache_dirs_and_key_are_private() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join(".tollgate");
    let dir = parent.join("cache");
    let cache = ArtifactCache::open(&dir, &engine).unwrap();
    assert_eq!(mode(&parent), "0700", "a parent the cache created");
    assert_eq!(mode(&dir), "0700");
    assert_eq!(mode(&dir.join(KEY_FILE)), "0600");
    let digest_a = digest(A.as_bytes());
    let (_, first) = cache
        .load_or_compile(&engine, &digest_a, A.as_bytes())
        .unwrap();
    let (component, second) = cache
        .load_or_compile(&engine, &digest_a, A.as_bytes())
        .unwrap();
    assert_eq!((first, second), (CacheOutcome::Miss, CacheOutcome::Hit));
    assert_eq!(answer(&engine, &component), 1);
}

#[test]
fn existing_cache_dir_others_can_only_read_is_used() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    let first = ArtifactCache::open(&dir, &engine).unwrap();
    drop(first);
    let cache = ArtifactCache::open(&dir, &engine).unwrap();
    let digest_a = digest(A.as_bytes());
    let (component, _) = cache
        .load_or_compile(&engine, &digest_a, A.as_bytes())
        .unwrap();
    assert_eq!(answer(&engine, &component), 1);
}

#[test]
fn a_remembered_digest_is_given_only_for_the_same_file_version() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(&tmp.path().join("cache"), &engine).unwrap();
    let path = tmp.path().join("tool.wasm");
    let digest_a = digest(A.as_bytes());
    cache.remember_digest(&path, Stamp::made_up(1), &digest_a);
    assert_eq!(
        cache.digest_of(&path, Stamp::made_up(1)),
        Some(digest_a.clone())
    );
    assert_eq!(
        cache.digest_of(&path, Stamp::made_up(2)),
        None,
        "another version of the file"
    );
    assert_eq!(
        cache.digest_of(&tmp.path().join("other.wasm"), Stamp::made_up(1)),
        None,
        "another file"
    );
}

#[test]
fn a_remembered_digest_someone_changed_is_not_believed() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(&tmp.path().join("cache"), &engine).unwrap();
    let path = tmp.path().join("tool.wasm");
    cache.remember_digest(&path, Stamp::made_up(1), &digest(A.as_bytes()));
    // Point the record at B's digest (whose artifact the cache may well hold) without the
    // key: the MAC no longer matches.
    let record = cache.digest_path(&path);
    let bytes = fs::read(&record).unwrap();
    let forged =
        String::from_utf8_lossy(&bytes).replace(&digest(A.as_bytes()), &digest(B.as_bytes()));
    assert_ne!(forged.as_bytes(), &bytes[..]);
    fs::write(&record, forged.as_bytes()).unwrap();
    assert_eq!(cache.digest_of(&path, Stamp::made_up(1)), None);
}

#[test]
fn a_hit_is_loaded_from_a_sealed_copy_of_the_artifact() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(&tmp.path().join("cache"), &engine).unwrap();
    let digest_a = digest(A.as_bytes());
    cache
        .load_or_compile(&engine, &digest_a, A.as_bytes())
        .unwrap();
    let (sealed, _) = Sealed::open::<MAC_LEN>(&cache.artifact_path(&digest_a)).unwrap();
    // The copy refuses every change: a write, a truncation, and growing it.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(sealed.path())
        .unwrap();
    use std::io::Write as _;
    assert!(file.write_all(b"x").is_err(), "a sealed copy took a write");
    assert!(file.set_len(1).is_err(), "a sealed copy was truncated");
    assert!(file.set_len(1 << 30).is_err(), "a sealed copy grew");
    let component = cache.load(&engine, &digest_a).expect("a hit");
    assert_eq!(answer(&engine, &component), 1);
}

#[test]
fn a_hit_where_memory_files_are_refused_is_read_checked_and_loaded() {
    let engine = engine();
    let tmp = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::open(&tmp.path().join("cache"), &engine).unwrap();
    let digest_a = digest(A.as_bytes());
    cache
        .load_or_compile(&engine, &digest_a, A.as_bytes())
        .unwrap();
    let path = cache.artifact_path(&digest_a);
    let artifact = std::thread::spawn({
        let path = path.clone();
        move || {
            refuse_memory_files_on_this_thread();
            Artifact::open(&path)
        }
    })
    .join()
    .unwrap()
    .expect("read without a memory file");
    assert!(
        matches!(artifact.body, Body::Read(_)),
        "memory files were refused, so the artifact was read"
    );
    let component = cache
        .check_and_load(&engine, &digest_a, &path, &artifact)
        .expect("a hit, not a compile");
    assert_eq!(answer(&engine, &component), 1);
    let mut forged = fs::read(&path).unwrap();
    forged[0] ^= 1;
    fs::write(&path, forged).unwrap();
    let tampered = Artifact::read(&path).unwrap();
    assert!(
        cache
            .check_and_load(&engine, &digest_a, &path, &tampered)
            .is_none(),
        "a changed artifact read into the heap fails its check like a sealed one"
    );
}

/// A seccomp filter on the calling thread (and threads it starts) that fails
/// `memfd_create` with `EPERM`, as a container's profile may.
#[expect(unsafe_code, reason = "installing a seccomp filter")]
fn refuse_memory_files_on_this_thread() {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, EPERM, PR_SET_NO_NEW_PRIVS,
        PR_SET_SECCOMP, SECCOMP_MODE_FILTER, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO,
        SYS_memfd_create, c_ulong, sock_filter, sock_fprog,
    };
    let op = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let filter = [
        // The system call's number: the first field of `seccomp_data`.
        op(BPF_LD | BPF_W | BPF_ABS, 0, 0, 0),
        op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, SYS_memfd_create as u32),
        op(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ERRNO | EPERM as u32),
        op(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW),
    ];
    let program = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl calls; the filter outlives the call, which copies it.
    unsafe {
        assert_eq!(libc::prctl(PR_SET_NO_NEW_PRIVS, 1 as c_ulong, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                PR_SET_SECCOMP,
                SECCOMP_MODE_FILTER as c_ulong,
                &raw const program as c_ulong
            ),
            0,
            "install a seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}
