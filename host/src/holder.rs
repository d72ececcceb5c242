//! Who holds an attempt: `<hostname>:<pid>:<process nonce>`. On the same machine, a holder
//! whose process is gone, or has exited and waits to be reaped, is known dead at once,
//! without waiting for its lease to run out.

use std::sync::OnceLock;

/// This process's holder identity.
pub fn this_process() -> &'static str {
    static HOLDER: OnceLock<String> = OnceLock::new();
    HOLDER.get_or_init(|| {
        format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )
    })
}

fn hostname() -> String {
    gethostname::gethostname()
        .to_string_lossy()
        .replace(':', "_")
}

/// True only when `holder` ran on this machine and its process no longer exists.
pub fn is_dead_local(holder: &str) -> bool {
    let mut parts = holder.rsplitn(3, ':');
    let (Some(_nonce), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname() || holder == this_process() {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    // Linux only; elsewhere, wait for the lease.
    cfg!(target_os = "linux") && is_gone(pid)
}

/// `/proc/<pid>` is absent once the process is gone. A process that has exited but is not
/// yet reaped (a zombie, state `Z`, or `X` while it is being reaped) keeps its PID, so that
/// PID cannot name another process yet: it is dead too.
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        // `<pid> (<comm>) <state> …`: the name may hold spaces and parentheses, the state
        // is the first field after the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| matches!(state, "Z" | "X")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_not_dead() {
        assert!(!is_dead_local(this_process()));
    }

    #[test]
    fn other_host_is_never_presumed_dead() {
        assert!(!is_dead_local("elsewhere.example:1:abc"));
    }

    /// A child of this test holds its PID until the test reaps it: no other process can be
    /// given that PID while the test looks at it.
    fn holder_of(child: &std::process::Child) -> String {
        format!("{}:{}:nonce", hostname(), child.id())
    }

    #[test]
    fn running_local_process_is_not_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let alive = is_dead_local(&holder_of(&child));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!alive);
    }

    #[test]
    fn gone_local_process_is_dead() {
        // `true` exits at once; until it is reaped, its PID stays its own, as a zombie.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let holder = holder_of(&child);
        let stat = format!("/proc/{}/stat", child.id());
        let start = std::time::Instant::now();
        let exited = loop {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            if state
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            {
                break true;
            }
            if start.elapsed() > std::time::Duration::from_secs(30) || !cfg!(target_os = "linux") {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let dead = is_dead_local(&holder);
        child.wait().unwrap();
        if cfg!(target_os = "linux") {
            assert!(exited, "the child did not exit within 30 s");
            assert!(dead, "an exited process is dead while its PID is held");
        } else {
            assert!(!dead, "elsewhere the lease decides");
        }
    }
}
