//! The packet engine: one packet in, zero or more HTTP transactions out.
//!
//! It strings the pure stages together (`wire` decode → `flow` table with TCP reassembly →
//! `http` parsing) for one packet worker. It does no I/O and reads no clock, so replaying the
//! same packets always yields the same transactions in the same order.

use crate::capture::RawPacket;
use crate::common::Timestamp;
use crate::flow::reassembly::{StreamConfig, StreamStats};
use crate::flow::table::{FlowConfig, FlowStats, FlowTable};
use crate::http::{HttpConfig, HttpStats};
use crate::transaction::Transaction;
use crate::wire::{DecodeConfig, DecodeStats, Decoded, Decoder};

/// Settings of every stage an engine runs.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    pub decode: DecodeConfig,
    pub flow: FlowConfig,
    pub stream: StreamConfig,
    pub http: HttpConfig,
}

/// One packet worker's pipeline.
pub struct Engine {
    decoder: Decoder,
    flows: FlowTable,
    last_ts: Timestamp,
    /// Transactions emitted so far.
    pub transactions: u64,
}

/// A copy of every counter of an engine, for summaries and metrics.
#[derive(Clone, Debug)]
pub struct EngineStats {
    pub decode: DecodeStats,
    pub flow: FlowStats,
    pub stream: StreamStats,
    pub http: HttpStats,
    pub transactions: u64,
    pub active_flows: usize,
    pub buffered_bytes: usize,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            decoder: Decoder::new(cfg.decode),
            flows: FlowTable::new(cfg.flow, cfg.stream, cfg.http),
            last_ts: Timestamp::ZERO,
            transactions: 0,
        }
    }

    /// Processes one captured packet; completed transactions are appended to `out`.
    pub fn process(&mut self, pkt: &RawPacket<'_>, out: &mut Vec<Transaction>) {
        let before = out.len();
        if pkt.ts > self.last_ts {
            self.last_ts = pkt.ts;
        }
        if let Decoded::Tcp(seg) = self.decoder.decode(pkt) {
            self.flows.on_segment(&seg, pkt.ts, out);
        }
        self.transactions += (out.len() - before) as u64;
    }

    /// Ends the input: flushes every flow and emits what is pending.
    pub fn finish(&mut self, out: &mut Vec<Transaction>) {
        let before = out.len();
        self.flows.finish(self.last_ts, out);
        self.transactions += (out.len() - before) as u64;
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            decode: self.decoder.stats().clone(),
            flow: self.flows.stats.clone(),
            stream: self.flows.stream_stats.clone(),
            http: self.flows.http_stats.clone(),
            transactions: self.transactions,
            active_flows: self.flows.active(),
            buffered_bytes: self.flows.buffered_bytes(),
        }
    }
}
