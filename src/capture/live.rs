//! Live capture from a network interface through libpcap.
//!
//! Invariant: a read timeout is not an error: [`LiveSource::next_packet`] returns `Ok(None)` so
//! the caller can do housekeeping (flush, check for shutdown) and call again. It returns within
//! about `read_timeout_ms` even on a link with no traffic at all: the capture is non-blocking
//! and waits on its descriptor itself, because with Linux TPACKET_V3 libpcap's own timeout only
//! runs once a packet has arrived, so an idle interface would block a read forever.

use super::{header_ts, CaptureError, CaptureStats, RawPacket};
use pcap::{Active, Capture};
use std::os::fd::{AsRawFd, RawFd};

/// How to open an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveOptions {
    /// Interface name (`eth0`, `any`, `lo`).
    pub interface: String,
    /// Receive frames not addressed to this host (needed on a span port).
    pub promiscuous: bool,
    /// Bytes kept per frame. Default 262144: whole frames, including TSO/GRO super-frames.
    pub snaplen_bytes: u32,
    /// BPF filter expression; empty for none.
    pub filter: String,
    /// Kernel ring buffer size. Default 32 MiB, enough to absorb bursts at a few Gbit/s.
    pub buffer_bytes: u32,
    /// Deliver each packet as it arrives instead of when the buffer fills or the timeout fires.
    pub immediate: bool,
    /// How long a read waits for packets before returning `Ok(None)`. Default 1000 ms.
    pub read_timeout_ms: u32,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            interface: "any".into(),
            promiscuous: true,
            snaplen_bytes: 262_144,
            filter: String::new(),
            buffer_bytes: 32 * 1024 * 1024,
            immediate: false,
            read_timeout_ms: 1000,
        }
    }
}

/// Counters the kernel keeps for a live capture (libpcap's `pcap_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the kernel received for this capture.
    pub received: u64,
    /// Packets dropped because the capture buffer was full: the sensor read too slowly.
    pub dropped: u64,
    /// Packets dropped by the interface or its driver.
    pub if_dropped: u64,
}

/// A capture on one interface.
pub struct LiveSource {
    interface: String,
    cap: Capture<Active>,
    /// The capture's descriptor, polled while the link is idle.
    fd: RawFd,
    read_timeout_ms: i32,
    /// The last read found nothing: wait on the descriptor before reading again.
    idle: bool,
    linktype: i32,
    stats: CaptureStats,
}

fn clamp_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl LiveSource {
    /// Opens and activates the interface, then installs the filter.
    pub fn open(opts: &LiveOptions) -> Result<LiveSource, CaptureError> {
        let live = |e: pcap::Error| CaptureError::Live {
            interface: opts.interface.clone(),
            reason: e.to_string(),
        };
        let mut cap = Capture::from_device(opts.interface.as_str())
            .map_err(live)?
            .promisc(opts.promiscuous)
            .snaplen(clamp_i32(opts.snaplen_bytes))
            .buffer_size(clamp_i32(opts.buffer_bytes))
            .immediate_mode(opts.immediate)
            .timeout(clamp_i32(opts.read_timeout_ms))
            .open()
            .and_then(|c| c.setnonblock())
            .map_err(live)?;
        if !opts.filter.is_empty() {
            cap.filter(&opts.filter, true)
                .map_err(|e| CaptureError::Filter {
                    interface: opts.interface.clone(),
                    filter: opts.filter.clone(),
                    reason: e.to_string(),
                })?;
        }
        let linktype = cap.get_datalink().0;
        let fd = cap.as_raw_fd();
        Ok(LiveSource {
            interface: opts.interface.clone(),
            cap,
            fd,
            read_timeout_ms: clamp_i32(opts.read_timeout_ms),
            idle: false,
            linktype,
            stats: CaptureStats::default(),
        })
    }

    /// Link type of the interface.
    pub fn linktype(&self) -> i32 {
        self.linktype
    }

    /// The next packet; `Ok(None)` when the read timeout passed without one.
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        if self.idle {
            // Only after an empty read, so a busy link costs no extra system call per packet.
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call. A failure (EINTR) is
            // treated as a timeout: the read below then finds nothing or something.
            unsafe { libc::poll(&mut pfd, 1, self.read_timeout_ms) };
        }
        match self.cap.next_packet() {
            Ok(p) => {
                self.idle = false;
                self.stats.packets += 1;
                self.stats.bytes += p.data.len() as u64;
                // Live captures keep libpcap's default microsecond stamps: asking for
                // nanoseconds may silently fail on some devices, and microseconds lose nothing
                // that matters for HTTP timing.
                Ok(Some(RawPacket {
                    ts: header_ts(p.header, 1000),
                    linktype: self.linktype,
                    data: p.data,
                    orig_len: p.header.len,
                }))
            }
            Err(pcap::Error::TimeoutExpired) => {
                self.idle = true;
                Ok(None)
            }
            Err(e) => Err(CaptureError::Read {
                interface: self.interface.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// Packets and bytes handed out so far.
    pub fn capture_stats(&self) -> &CaptureStats {
        &self.stats
    }

    /// The kernel's counters for this capture.
    pub fn stats(&mut self) -> Result<KernelStats, CaptureError> {
        let s = self.cap.stats().map_err(|e| CaptureError::Read {
            interface: self.interface.clone(),
            reason: e.to_string(),
        })?;
        Ok(KernelStats {
            received: u64::from(s.received),
            dropped: u64::from(s.dropped),
            if_dropped: u64::from(s.if_dropped),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    /// The effective user id, from the `Uid:` line of `/proc/self/status` (real, effective,
    /// saved, filesystem).
    fn euid() -> Option<u32> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        line.split_whitespace().nth(2)?.parse().ok()
    }

    #[test]
    fn captures_a_udp_datagram_on_loopback() {
        if euid() != Some(0) {
            println!("skipped: needs root");
            return;
        }
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
        let port = rx.local_addr().expect("receiver address").port();
        let opts = LiveOptions {
            interface: "lo".into(),
            promiscuous: false,
            snaplen_bytes: 65_535,
            filter: format!("udp and dst port {port}"),
            buffer_bytes: 1 << 20,
            immediate: true,
            read_timeout_ms: 100,
        };
        let mut src = LiveSource::open(&opts).expect("open lo");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        let marker = b"apitap-live-capture-test";
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = false;
        let mut last_send = Instant::now() - Duration::from_secs(1);
        while !seen && Instant::now() < deadline {
            // Resend now and then: the first datagram may go out before the capture is live.
            if last_send.elapsed() >= Duration::from_millis(200) {
                tx.send_to(marker, ("127.0.0.1", port)).expect("send");
                last_send = Instant::now();
            }
            if let Some(p) = src.next_packet().expect("read lo") {
                assert!(p.orig_len as usize >= p.data.len());
                seen = p.data.windows(marker.len()).any(|w| w == marker);
            }
        }
        assert!(seen, "the datagram to port {port} was not captured on lo");
        let k = src.stats().expect("kernel stats");
        assert!(k.received >= 1);
        assert!(src.capture_stats().packets >= 1);
    }

    /// A read on an interface with no matching traffic returns within about the timeout.
    #[test]
    fn an_idle_link_returns_after_the_timeout() {
        if euid() != Some(0) {
            println!("skipped: needs root");
            return;
        }
        let opts = LiveOptions {
            interface: "lo".into(),
            // Traffic that does not exist on loopback.
            filter: "udp port 9 and host 192.0.2.77".into(),
            read_timeout_ms: 50,
            ..LiveOptions::default()
        };
        let mut src = LiveSource::open(&opts).expect("open lo");
        let started = Instant::now();
        for _ in 0..3 {
            assert!(src.next_packet().expect("read lo").is_none());
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn bad_filter_names_interface_and_filter() {
        if euid() != Some(0) {
            println!("skipped: needs root");
            return;
        }
        let opts = LiveOptions {
            interface: "lo".into(),
            filter: "port banana".into(),
            ..LiveOptions::default()
        };
        let err = LiveSource::open(&opts).err().expect("filter must fail");
        let msg = err.to_string();
        assert!(msg.contains("lo") && msg.contains("port banana"), "{msg}");
    }
}
