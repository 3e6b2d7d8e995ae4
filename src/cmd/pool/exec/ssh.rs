//! Hosts: `-S/--sshlogin [N/]host[,…]`, and the connection to each remote
//! one: `ssh HOST exec pk-pool worker`, through the ssh the user has
//! (`--ssh`, default `ssh`), so `~/.ssh/config`, keys, agents and
//! ControlMaster apply as for any ssh command (without a terminal: keys
//! or an agent, no prompts). One connection per host
//! carries all its slots: job frames go down ssh's stdin, output and
//! results come back up its stdout ([`super::wire`]). ssh's own messages
//! (a refused connection, a host key warning) reach our stderr.

use std::os::fd::{AsFd, OwnedFd};

use super::wire::{self, Msg};
use crate::error::{Error, Result};
use crate::pipe::FrameReader;
use crate::spawn::{Running, Spawn, Stdin};

/// One `-S` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// `:` for this machine.
    pub name: String,
    /// `N/` given: the slots on it.
    pub slots: Option<usize>,
}

impl HostSpec {
    pub fn is_local(&self) -> bool {
        self.name == ":"
    }
}

/// Parse one `-S` value: comma-separated `[N/]host`, `:` for this machine.
pub fn parse_sshlogin(s: &str) -> std::result::Result<Vec<HostSpec>, String> {
    let mut hosts = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("'{s}' has an empty host"));
        }
        let (slots, name) = match part.split_once('/') {
            Some((n, host)) => {
                let n: usize = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| {
                        format!("'{n}' in '{part}' is not a slot count from 1 to 1024")
                    })?;
                (Some(n), host)
            }
            None => (None, part),
        };
        if name.is_empty()
            || name.starts_with('-')
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("'{name}' is not a host name"));
        }
        hosts.push(HostSpec {
            name: name.to_string(),
            slots,
        });
    }
    Ok(hosts)
}

/// A running ssh connection to a worker.
#[derive(Debug)]
pub struct Conn {
    pub ssh: Running,
    to: Option<OwnedFd>,
    pub from: FrameReader<OwnedFd>,
}

impl Conn {
    /// Start `ssh_cmd host exec remote_cmd worker`; its stdin and stdout
    /// are pipes of ours, the read end non-blocking.
    pub fn open(ssh_cmd: &[String], host: &str, remote_cmd: &str) -> Result<Conn> {
        let (child_in, to) = crate::pipe::pipe()?;
        let (from, child_out) = crate::pipe::pipe()?;
        let from = OwnedFd::from(from);
        set_nonblocking(&from)?;
        let mut argv: Vec<String> = ssh_cmd.to_vec();
        argv.push(host.to_string());
        argv.push(format!("exec {} worker", shell_word(remote_cmd)));
        let ssh = Spawn::new(&argv)?
            .stdin(Stdin::Fd(child_in.into()))
            .stdout_fd(child_out.into())
            // ssh in a session of its own: a terminal's ^C reaches us, and
            // we end the remote jobs before the connection; and with no
            // terminal to prompt on (a password, a host key), it fails at
            // once instead of being stopped for ever in the background.
            .session(true)
            .die_with_parent(nix::sys::signal::Signal::SIGTERM)
            .start()?;
        Ok(Conn {
            ssh,
            to: Some(to.into()),
            from: FrameReader::new(from),
        })
    }

    /// Send one message; false when the connection is gone (EPIPE).
    pub fn send(&mut self, msg: &Msg) -> Result<bool> {
        let Some(to) = &self.to else {
            return Ok(false);
        };
        match crate::pipe::send(to.as_fd(), &msg.encode()) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EPIPE) => {
                self.to = None;
                Ok(false)
            }
            Err(e) => Err(Error::sys("write", "ssh stdin", e)),
        }
    }

    /// Close ssh's stdin: the worker sees end of file.
    pub fn close(&mut self) {
        self.to = None;
    }

    /// The next complete message already received, without waiting:
    /// `Ok(None)` when none is complete yet; `Err` with `closed` when the
    /// connection ended.
    pub fn recv(&mut self, host: &str) -> std::result::Result<Option<Msg>, Closed> {
        match self.from.recv() {
            Ok(Some(frame)) => Msg::decode(frame, host)
                .map(Some)
                .map_err(|e| Closed(Some(e))),
            Ok(None) => Err(Closed(None)),
            Err(e) if e.errno() == Some(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(e) => Err(Closed(Some(e))),
        }
    }
}

/// The connection ended: cleanly (`None`) or with this error.
#[derive(Debug)]
pub struct Closed(pub Option<Error>);

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::sys("fcntl", "ssh pipe", e))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| Error::sys("fcntl", "ssh pipe", e))?;
    Ok(())
}

/// `s` as one word for the remote shell.
fn shell_word(s: &str) -> String {
    super::template::shell_line(&[s.as_bytes().to_vec()])
}

/// The hello the master sends first.
pub fn hello(timeout_ms: u64, kill_after_ms: u64) -> Msg {
    Msg::Hello {
        version: wire::VERSION,
        timeout_ms,
        kill_after_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshlogins() {
        let h = |name: &str, slots| HostSpec {
            name: name.into(),
            slots,
        };
        assert_eq!(
            parse_sshlogin("2/alice@a,:,b").unwrap(),
            [h("alice@a", Some(2)), h(":", None), h("b", None)]
        );
        assert_eq!(parse_sshlogin("1/:").unwrap(), [h(":", Some(1))]);
        for bad in [
            "",
            "a,,b",
            "0/a",
            "x/a",
            "2/",
            "-oProxyCommand=x",
            "a b",
            "2000/a",
        ] {
            assert!(parse_sshlogin(bad).is_err(), "{bad}");
        }
    }
}
