//! Decoder tests: one per link type and tunnel, fragments, truncation sweeps and random bytes.
