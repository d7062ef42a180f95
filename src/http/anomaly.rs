//! Named protocol oddities raised by the HTTP/1.x parser.
//!
//! Every variant describes something that was *seen* on the wire. The parser records each one on
//! the transaction it belongs to (as [`HttpAnomaly::name`] in `Transaction::flags`) and counts it
//! in `HttpStats`. Names are part of the JSON output: never rename a variant's `name()`.
//!
//! Invariant: `ALL` lists every variant exactly once, in declaration order, so `index()` can key a
//! fixed-size counter array.

/// A protocol oddity seen while parsing one HTTP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpAnomaly {
    /// Several Content-Length values that all agree.
    DuplicateContentLength,
    /// Several Content-Length values that disagree; the first valid one frames the body.
    ConflictingContentLength,
    /// A Content-Length that is not a decimal number fitting in 64 bits (or is negative).
    InvalidContentLength,
    /// Transfer-Encoding and Content-Length together; Transfer-Encoding wins (RFC 9112 §6.3).
    TransferEncodingWithContentLength,
    /// A transfer coding other than chunked, gzip, deflate or identity, or chunked not last.
    UnknownTransferCoding,
    /// A header field continued on the next line (obsolete line folding).
    ObsFold,
    /// A chunk-size line that is not a hexadecimal number.
    InvalidChunkSize,
    /// A chunk size that does not fit in 64 bits.
    ChunkSizeOverflow,
    /// A chunk size written with a minus sign.
    NegativeChunkSize,
    /// A chunk-size line longer than `max_chunk_line_bytes`.
    OversizeChunkLine,
    /// Chunk data not followed by CRLF.
    MissingChunkCrlf,
    /// A response with no outstanding request to answer.
    ResponseWithoutRequest,
    /// A message head longer than `max_header_bytes`; the head was dropped.
    OversizeHead,
    /// More header fields than `max_headers`; the rest were not kept.
    TooManyHeaders,
    /// A request line that needed the lenient parser (odd spacing, version or target bytes).
    InvalidRequestLine,
    /// A status line that needed the lenient parser or could not be parsed.
    InvalidStatusLine,
    /// A header line that needed the lenient parser (no colon, odd name bytes, space before colon).
    InvalidHeaderLine,
    /// An HTTP version other than 1.0 or 1.1 on the start line (e.g. `HTTP/1.2`, `http/1.1`).
    NonstandardVersion,
    /// An HTTP/0.9 simple request (`GET /x` without a version) or its response.
    Http09,
    /// Bytes that are not an HTTP message where one should start; they were skipped.
    JunkBeforeMessage,
    /// More pipelined requests waiting than `max_pending_requests`; the oldest lost its pairing.
    ExcessivePipelining,
    /// More interim (1xx) responses than `max_interim_responses` before a final one.
    TooManyInterimResponses,
    /// A gzip or deflate body could not be decoded; decoding stopped.
    DecompressionFailed,
    /// Decoding a body exceeded `max_decompressed_bytes` or `max_decompression_ratio`.
    DecompressionBomb,
    /// A Content-Encoding other than gzip, x-gzip, deflate or identity; the body is kept raw.
    UnsupportedContentEncoding,
    /// Client bytes followed a CONNECT or Upgrade request before the server accepted the tunnel.
    DataAfterTunnel,
    /// The connection ended inside a message; the message was cut short.
    TruncatedMessage,
    /// Request-target bytes that are not UTF-8; they are kept percent-encoded (`%D9`).
    UriInvalidUtf8,
    /// A chunk size with bytes around its hex digits other than whitespace and extensions; the
    /// digits were used, as lenient clients read them.
    ChunkSizeJunk,
    /// Transfer-Encoding in a response older than HTTP/1.1; a Content-Length beside it wins.
    TransferEncodingInHttp10,
    /// A final response arrived while its request head was still incomplete; the head was taken
    /// as it stood.
    ResponseBeforeRequestEnd,
    /// A gzip header with reserved flag bits or a header CRC; decoded without checking either.
    LenientGzipHeader,
}

impl HttpAnomaly {
    /// Every variant once, in declaration order.
    pub const ALL: [HttpAnomaly; 32] = [
        HttpAnomaly::DuplicateContentLength,
        HttpAnomaly::ConflictingContentLength,
        HttpAnomaly::InvalidContentLength,
        HttpAnomaly::TransferEncodingWithContentLength,
        HttpAnomaly::UnknownTransferCoding,
        HttpAnomaly::ObsFold,
        HttpAnomaly::InvalidChunkSize,
        HttpAnomaly::ChunkSizeOverflow,
        HttpAnomaly::NegativeChunkSize,
        HttpAnomaly::OversizeChunkLine,
        HttpAnomaly::MissingChunkCrlf,
        HttpAnomaly::ResponseWithoutRequest,
        HttpAnomaly::OversizeHead,
        HttpAnomaly::TooManyHeaders,
        HttpAnomaly::InvalidRequestLine,
        HttpAnomaly::InvalidStatusLine,
        HttpAnomaly::InvalidHeaderLine,
        HttpAnomaly::NonstandardVersion,
        HttpAnomaly::Http09,
        HttpAnomaly::JunkBeforeMessage,
        HttpAnomaly::ExcessivePipelining,
        HttpAnomaly::TooManyInterimResponses,
        HttpAnomaly::DecompressionFailed,
        HttpAnomaly::DecompressionBomb,
        HttpAnomaly::UnsupportedContentEncoding,
        HttpAnomaly::DataAfterTunnel,
        HttpAnomaly::TruncatedMessage,
        HttpAnomaly::UriInvalidUtf8,
        HttpAnomaly::ChunkSizeJunk,
        HttpAnomaly::TransferEncodingInHttp10,
        HttpAnomaly::ResponseBeforeRequestEnd,
        HttpAnomaly::LenientGzipHeader,
    ];

    /// Number of variants: the length of a per-anomaly counter array.
    pub const COUNT: usize = HttpAnomaly::ALL.len();

    /// Position in [`HttpAnomaly::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The snake_case name used in `Transaction::flags` and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            HttpAnomaly::DuplicateContentLength => "duplicate_content_length",
            HttpAnomaly::ConflictingContentLength => "conflicting_content_length",
            HttpAnomaly::InvalidContentLength => "invalid_content_length",
            HttpAnomaly::TransferEncodingWithContentLength => {
                "transfer_encoding_with_content_length"
            }
            HttpAnomaly::UnknownTransferCoding => "unknown_transfer_coding",
            HttpAnomaly::ObsFold => "obs_fold",
            HttpAnomaly::InvalidChunkSize => "invalid_chunk_size",
            HttpAnomaly::ChunkSizeOverflow => "chunk_size_overflow",
            HttpAnomaly::NegativeChunkSize => "negative_chunk_size",
            HttpAnomaly::OversizeChunkLine => "oversize_chunk_line",
            HttpAnomaly::MissingChunkCrlf => "missing_chunk_crlf",
            HttpAnomaly::ResponseWithoutRequest => "response_without_request",
            HttpAnomaly::OversizeHead => "oversize_head",
            HttpAnomaly::TooManyHeaders => "too_many_headers",
            HttpAnomaly::InvalidRequestLine => "invalid_request_line",
            HttpAnomaly::InvalidStatusLine => "invalid_status_line",
            HttpAnomaly::InvalidHeaderLine => "invalid_header_line",
            HttpAnomaly::NonstandardVersion => "nonstandard_version",
            HttpAnomaly::Http09 => "http_0_9",
            HttpAnomaly::JunkBeforeMessage => "junk_before_message",
            HttpAnomaly::ExcessivePipelining => "excessive_pipelining",
            HttpAnomaly::TooManyInterimResponses => "too_many_interim_responses",
            HttpAnomaly::DecompressionFailed => "decompression_failed",
            HttpAnomaly::DecompressionBomb => "decompression_bomb",
            HttpAnomaly::UnsupportedContentEncoding => "unsupported_content_encoding",
            HttpAnomaly::DataAfterTunnel => "data_after_tunnel",
            HttpAnomaly::TruncatedMessage => "truncated_message",
            HttpAnomaly::UriInvalidUtf8 => "uri_invalid_utf8",
            HttpAnomaly::ChunkSizeJunk => "chunk_size_junk",
            HttpAnomaly::TransferEncodingInHttp10 => "transfer_encoding_in_http10",
            HttpAnomaly::ResponseBeforeRequestEnd => "response_before_request_end",
            HttpAnomaly::LenientGzipHeader => "lenient_gzip_header",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_each_variant_at_its_index_with_a_unique_snake_case_name() {
        let mut names = std::collections::HashSet::new();
        for (i, a) in HttpAnomaly::ALL.iter().enumerate() {
            assert_eq!(a.index(), i, "{a:?}");
            let n = a.name();
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}"
            );
            assert!(names.insert(n), "duplicate name {n}");
        }
    }
}
