//! Dropping root once the capture is open.
//!
//! Opening a capture needs root or CAP_NET_RAW; nothing after it does. The daemon opens the
//! interface, binds the metrics socket and opens its output files first, then switches to
//! `[daemon] user` (its primary group, no supplementary groups). Switching the user id away
//! from root clears every capability, so a compromised parser holds neither root nor
//! CAP_NET_RAW.
//!
//! Invariant: this runs before any thread is spawned, so every thread runs as the new user.

use std::ffi::{CStr, CString};

/// What happened to the process's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// No user configured; the process keeps running as it started.
    NotConfigured { root: bool },
    /// A user is configured but the process is not root: nothing to drop (capabilities given
    /// to the binary, or an unprivileged replay).
    NotRoot,
    /// Now running as this user and group.
    Switched { user: String, uid: u32, gid: u32 },
}

/// Why switching user failed. Starting anyway would leave the sensor as root, so it is fatal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivilegeError {
    #[error("[daemon] user = {0:?}: no such user: create it (useradd --system {0}) or change the setting")]
    NoSuchUser(String),
    #[error("[daemon] user = {user:?}: cannot switch to it: {call} failed: {reason}")]
    Switch {
        user: String,
        call: &'static str,
        reason: String,
    },
}

/// Switches to `user` if one is configured and the process is root.
pub fn drop_to(user: &str) -> Result<Dropped, PrivilegeError> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if user.is_empty() {
        return Ok(Dropped::NotConfigured { root });
    }
    if !root {
        return Ok(Dropped::NotRoot);
    }
    let (uid, gid) = lookup(user)?;
    let fail = |call: &'static str| PrivilegeError::Switch {
        user: user.to_owned(),
        call,
        reason: std::io::Error::last_os_error().to_string(),
    };
    // Order matters: groups and group id can only be changed while still root.
    // SAFETY: a zero-length list with a null pointer is the documented way to clear the
    // supplementary groups; setgid/setuid take plain ids.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(fail("setgroups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(fail("setuid"));
        }
        // The switch must be irreversible; a process that can regain root has dropped nothing.
        if uid != 0 && libc::setuid(0) == 0 {
            return Err(PrivilegeError::Switch {
                user: user.to_owned(),
                call: "setuid",
                reason: "root could be regained afterwards".into(),
            });
        }
    }
    Ok(Dropped::Switched {
        user: user.to_owned(),
        uid,
        gid,
    })
}

/// The user and primary group ids of `user`.
fn lookup(user: &str) -> Result<(u32, u32), PrivilegeError> {
    let name = CString::new(user).map_err(|_| PrivilegeError::NoSuchUser(user.to_owned()))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `passwd` is plain data; getpwnam_r fills it with pointers into `buf`, which
    // outlives every use below, and `result` tells whether an entry was found.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return Err(PrivilegeError::NoSuchUser(user.to_owned()));
        }
        // Name read back only to be sure the entry is the one asked for.
        if CStr::from_ptr(pwd.pw_name).to_bytes() != user.as_bytes() {
            return Err(PrivilegeError::NoSuchUser(user.to_owned()));
        }
        Ok((pwd.pw_uid, pwd.pw_gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_and_no_user() {
        assert!(matches!(drop_to(""), Ok(Dropped::NotConfigured { .. })));
        // SAFETY: no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let r = drop_to("apitap-no-such-user-4d1f");
        if root {
            assert_eq!(
                r,
                Err(PrivilegeError::NoSuchUser(
                    "apitap-no-such-user-4d1f".into()
                ))
            );
        } else {
            assert_eq!(r, Ok(Dropped::NotRoot));
        }
    }

    #[test]
    fn looks_up_root() {
        assert_eq!(lookup("root"), Ok((0, 0)));
        assert!(lookup("apitap-no-such-user-4d1f").is_err());
        assert!(lookup("nul\0byte").is_err());
    }
}
