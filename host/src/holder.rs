//! Who holds an attempt: `<hostname>:<pid>:<process nonce>`. On the same machine, a holder
//! whose process is gone is known dead at once, without waiting for its lease to run out.

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
    // /proc/<pid> is absent once the process is gone (Linux); elsewhere, wait for the lease.
    cfg!(target_os = "linux") && !std::path::Path::new(&format!("/proc/{pid}")).exists()
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

    #[test]
    fn gone_local_process_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let holder = format!("{}:{pid}:nonce", hostname());
        assert_eq!(is_dead_local(&holder), cfg!(target_os = "linux"));
    }
}
