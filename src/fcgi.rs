//! A FastCGI 1.0 responder over the listening socket that mod_fcgid hands
//! the process on fd 0 (a Unix domain socket, or a TCP one: both accept and
//! read the same). Owns the wire protocol only: accepting connections one
//! after another, decoding records, and turning each request into one
//! handler call and one buffered write. It must not interpret params (no
//! UTF-8, no HTTP: names and values are bytes, passed on whole and in
//! order), must not start threads, and must never panic or allocate without
//! bound on anything the web server sends.
//!
//! API:
//! - `run(max_body, handler, on_connection_error)` serves fd 0 until
//!   `accept` fails with anything but `EINTR`/`ECONNABORTED`, and returns
//!   that error (the process exits; mod_fcgid starts another). A
//!   connection that breaks the protocol is closed and reported to
//!   `on_connection_error`; the loop goes on with the next one.
//! - `serve_connection(stream, max_body, handler)` runs the protocol on one
//!   connected stream, so tests and fuzzers need no socket.
//! - `handler(params, &mut body)`, the params handed over, returns the
//!   CGI-style response (`Status: 200 OK\r\nName: value\r\n\r\nbody`)
//!   as an `Answer`: bytes (a `Vec<u8>` converts), and optionally a
//!   reader with the rest of the body. The bytes are sent as STDOUT
//!   records of at most 65535 bytes, an empty STDOUT and an END_REQUEST
//!   (application status 0, FCGI_REQUEST_COMPLETE), in a single write;
//!   with a reader, its content follows the bytes one full record at a
//!   time as it is read, so an answer of any size costs one record's
//!   buffer.
//!
//! Records (the role is FCGI_RESPONDER only; one request at a time):
//! - BEGIN_REQUEST starts a request; another role gets END_REQUEST
//!   FCGI_UNKNOWN_ROLE, and a second request while one is active gets
//!   FCGI_CANT_MPX_CONN. Without FCGI_KEEP_CONN the connection closes after
//!   the answer; with it the next request is read from the same connection.
//! - PARAMS is buffered up to `MAX_PARAMS_BYTES` (a pair may span records)
//!   and decoded at the empty PARAMS record; beyond the cap the connection
//!   is refused.
//! - STDIN is buffered up to `max_body + 1` bytes; the rest is read and
//!   discarded, so the handler's reader shows a body over the limit
//!   without holding all of it. The handler runs at the empty STDIN record.
//! - ABORT_REQUEST ends the active request with END_REQUEST and no
//!   handler call.
//! - GET_VALUES (request id 0) is answered with FCGI_MAX_CONNS=1,
//!   FCGI_MAX_REQS=1 and FCGI_MPXS_CONNS=0, for the names asked; any other
//!   type on id 0 gets UNKNOWN_TYPE. Records for another request id are
//!   ignored.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// What a handler answers: the response's first bytes, the bytes after
/// them (kept apart so that a body is copied once, into its records), then,
/// for a large answer, a reader of the rest, copied out one record at a
/// time.
pub struct Answer {
    pub bytes: Vec<u8>,
    pub body: Vec<u8>,
    pub rest: Option<Box<dyn Read>>,
}

impl From<Vec<u8>> for Answer {
    fn from(bytes: Vec<u8>) -> Answer {
        Answer {
            bytes,
            body: Vec::new(),
            rest: None,
        }
    }
}

/// Params of one request as raw bytes, in the order the web server sent
/// them; a name sent twice appears twice.
pub type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// The most PARAMS bytes one request may send. Apache's own header limits
/// keep real requests far below it; past it the connection is refused
/// rather than buffered.
pub const MAX_PARAMS_BYTES: usize = 1024 * 1024;

/// The descriptor on which mod_fcgid hands over its listening socket.
const LISTENING_FD: RawFd = 0;

/// Large enough to hold a full record (8 + 65535 + 255 bytes) so that most
/// records cost one read.
const READ_BUFFER_BYTES: usize = 72 * 1024;

const FCGI_VERSION_1: u8 = 1;
const HEADER_BYTES: usize = 8;
const MAX_CONTENT_BYTES: usize = u16::MAX as usize;

const FCGI_BEGIN_REQUEST: u8 = 1;
const FCGI_ABORT_REQUEST: u8 = 2;
const FCGI_END_REQUEST: u8 = 3;
const FCGI_PARAMS: u8 = 4;
const FCGI_STDIN: u8 = 5;
const FCGI_STDOUT: u8 = 6;
const FCGI_GET_VALUES: u8 = 9;
const FCGI_GET_VALUES_RESULT: u8 = 10;
const FCGI_UNKNOWN_TYPE: u8 = 11;

const FCGI_RESPONDER: u16 = 1;
const FCGI_KEEP_CONN: u8 = 1;

const FCGI_REQUEST_COMPLETE: u8 = 0;
const FCGI_CANT_MPX_CONN: u8 = 1;
const FCGI_UNKNOWN_ROLE: u8 = 3;

/// Why a connection was closed before its peer closed it.
#[derive(Debug)]
pub enum ProtocolError {
    /// Reading from or writing to the connection failed.
    Io(io::Error),
    /// The stream ended inside a record, or before the active request's
    /// STDIN was complete.
    Truncated,
    /// A record header carried a version other than 1.
    UnsupportedVersion(u8),
    /// One request's PARAMS stream went past `MAX_PARAMS_BYTES`.
    ParamsTooLarge,
    /// A record's content does not decode, or arrives out of order.
    Malformed(&'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Io(error) => write!(formatter, "FastCGI connection I/O: {error}"),
            ProtocolError::Truncated => formatter.write_str("FastCGI stream ended mid-request"),
            ProtocolError::UnsupportedVersion(version) => {
                write!(formatter, "FastCGI record version {version} is not 1")
            }
            ProtocolError::ParamsTooLarge => write!(
                formatter,
                "FastCGI PARAMS stream over {MAX_PARAMS_BYTES} bytes"
            ),
            ProtocolError::Malformed(what) => write!(formatter, "malformed FastCGI input: {what}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Serves requests on the listening socket at fd 0, one connection after
/// another, until `accept` fails fatally; returns that error. A connection
/// that breaks the protocol is closed and passed to `on_connection_error`.
pub fn run<Handler, Out, OnError>(
    max_body: usize,
    mut handler: Handler,
    mut on_connection_error: OnError,
) -> io::Result<()>
where
    Handler: FnMut(Params, &mut dyn Read) -> Out,
    Out: Into<Answer>,
    OnError: FnMut(&ProtocolError),
{
    loop {
        let mut connection = accept_connection(LISTENING_FD)?;
        if let Err(error) = serve_connection(&mut connection, max_body, &mut handler) {
            on_connection_error(&error);
        }
    }
}

/// Accepts one connection on `listening_fd`, retrying the errors that only
/// mean "try again". The connection is returned as a `File`: its reads and
/// writes are plain read(2)/write(2), which is all a connected socket of
/// either family needs, and std's `UnixListener` refuses a TCP socket.
#[allow(unsafe_code)]
fn accept_connection(listening_fd: RawFd) -> io::Result<File> {
    loop {
        // SAFETY: with null address pointers accept writes nothing into
        // this process's memory; on a descriptor that is not a listening
        // socket it fails with an error code and has no other effect.
        let connected_fd =
            unsafe { libc::accept(listening_fd, std::ptr::null_mut(), std::ptr::null_mut()) };
        if connected_fd >= 0 {
            // SAFETY: accept just returned this descriptor; nothing else in
            // the process owns it, so the File is its only closer.
            let owned = unsafe { OwnedFd::from_raw_fd(connected_fd) };
            return Ok(File::from(owned));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR | libc::ECONNABORTED) => continue,
            _ => return Err(error),
        }
    }
}

/// Runs the protocol on one connected stream until the peer closes it
/// between requests (`Ok`), a request without FCGI_KEEP_CONN is answered
/// (`Ok`), or the input breaks the protocol (`Err`).
pub fn serve_connection<Stream, Handler, Out>(
    stream: &mut Stream,
    max_body: usize,
    handler: &mut Handler,
) -> Result<(), ProtocolError>
where
    Stream: Read + Write,
    Handler: FnMut(Params, &mut dyn Read) -> Out,
    Out: Into<Answer>,
{
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let mut content = Vec::with_capacity(MAX_CONTENT_BYTES);
    let mut active: Option<ActiveRequest> = None;
    loop {
        let Some(header) = read_record(&mut reader, &mut content)? else {
            return match active {
                Some(_) => Err(ProtocolError::Truncated),
                None => Ok(()),
            };
        };
        let reply = if header.request_id == 0 {
            Reply {
                output: answer_management_record(header.record_type, &content)?,
                rest: None,
                close_connection: false,
            }
        } else {
            handle_request_record(&header, &content, &mut active, max_body, handler)?
        };
        if !reply.output.is_empty() || reply.rest.is_some() {
            let writer = reader.get_mut();
            writer.write_all(&reply.output).map_err(ProtocolError::Io)?;
            if let Some((request_id, rest)) = reply.rest {
                write_rest(writer, request_id, rest)?;
            }
            writer.flush().map_err(ProtocolError::Io)?;
        }
        if reply.close_connection {
            return Ok(());
        }
    }
}

struct RecordHeader {
    record_type: u8,
    request_id: u16,
}

/// The request being received: one at a time per connection.
struct ActiveRequest {
    request_id: u16,
    keep_connection: bool,
    params_stream: Vec<u8>,
    /// Set at the empty PARAMS record; STDIN is accepted only after it.
    params: Option<Params>,
    body: Vec<u8>,
}

/// What one record asks of the connection: bytes to send now (none is
/// fine), then the rest of an answer to copy out as STDOUT records and end
/// (when the handler gave a reader), and whether the connection ends after
/// them.
struct Reply {
    output: Vec<u8>,
    rest: Option<(u16, Box<dyn Read>)>,
    close_connection: bool,
}

impl Reply {
    fn nothing() -> Reply {
        Reply {
            output: Vec::new(),
            rest: None,
            close_connection: false,
        }
    }
}

/// Reads one record into `content` (padding skipped). `None` is a clean
/// end of stream at a record boundary.
fn read_record<Reader: BufRead>(
    reader: &mut Reader,
    content: &mut Vec<u8>,
) -> Result<Option<RecordHeader>, ProtocolError> {
    if at_end_of_stream(reader)? {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_BYTES];
    read_exact_or_truncated(reader, &mut header)?;
    let [version, record_type, id_high, id_low, length_high, length_low, padding_length, _reserved] =
        header;
    if version != FCGI_VERSION_1 {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    // The length is a u16, so the buffer never grows past 64 KiB whatever
    // the header says.
    content.clear();
    content.resize(
        usize::from(u16::from_be_bytes([length_high, length_low])),
        0,
    );
    read_exact_or_truncated(reader, content)?;
    let mut padding_buffer = [0u8; u8::MAX as usize];
    let padding = padding_buffer
        .get_mut(..usize::from(padding_length))
        .unwrap_or_default();
    read_exact_or_truncated(reader, padding)?;
    Ok(Some(RecordHeader {
        record_type,
        request_id: u16::from_be_bytes([id_high, id_low]),
    }))
}

fn at_end_of_stream<Reader: BufRead>(reader: &mut Reader) -> Result<bool, ProtocolError> {
    loop {
        match reader.fill_buf() {
            Ok(buffered) => return Ok(buffered.is_empty()),
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(ProtocolError::Io(error)),
        }
    }
}

fn read_exact_or_truncated<Reader: Read>(
    reader: &mut Reader,
    buffer: &mut [u8],
) -> Result<(), ProtocolError> {
    reader.read_exact(buffer).map_err(|error| {
        if error.kind() == ErrorKind::UnexpectedEof {
            ProtocolError::Truncated
        } else {
            ProtocolError::Io(error)
        }
    })
}

/// Request id 0: only GET_VALUES is understood; the spec asks for
/// UNKNOWN_TYPE for every other management record.
fn answer_management_record(record_type: u8, content: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut output = Vec::new();
    if record_type != FCGI_GET_VALUES {
        let body = [record_type, 0, 0, 0, 0, 0, 0, 0];
        push_record(&mut output, FCGI_UNKNOWN_TYPE, 0, &body);
        return Ok(output);
    }
    let asked = decode_pairs(content)?;
    let known: [(&[u8], &[u8]); 3] = [
        (b"FCGI_MAX_CONNS", b"1"),
        (b"FCGI_MAX_REQS", b"1"),
        (b"FCGI_MPXS_CONNS", b"0"),
    ];
    // Each known name is answered once however often it is asked, which
    // keeps the answer far below one record's 65535 bytes.
    let mut answer = Vec::new();
    for (name, value) in known {
        if asked.iter().any(|(asked_name, _)| asked_name == name) {
            encode_pair(&mut answer, name, value);
        }
    }
    push_record(&mut output, FCGI_GET_VALUES_RESULT, 0, &answer);
    Ok(output)
}

fn handle_request_record<Handler, Out>(
    header: &RecordHeader,
    content: &[u8],
    active: &mut Option<ActiveRequest>,
    max_body: usize,
    handler: &mut Handler,
) -> Result<Reply, ProtocolError>
where
    Handler: FnMut(Params, &mut dyn Read) -> Out,
    Out: Into<Answer>,
{
    let request_id = header.request_id;
    if header.record_type == FCGI_BEGIN_REQUEST {
        return begin_request(request_id, content, active);
    }
    let Some(request) = active
        .as_mut()
        .filter(|request| request.request_id == request_id)
    else {
        // Not multiplexing: a record for any other request is dropped.
        return Ok(Reply::nothing());
    };
    match header.record_type {
        FCGI_ABORT_REQUEST => {
            let keep_connection = request.keep_connection;
            *active = None;
            Ok(Reply {
                output: end_request_record(request_id, FCGI_REQUEST_COMPLETE),
                rest: None,
                close_connection: !keep_connection,
            })
        }
        FCGI_PARAMS => {
            if request.params.is_some() {
                return Err(ProtocolError::Malformed("PARAMS after the end of PARAMS"));
            }
            if content.is_empty() {
                request.params = Some(decode_pairs(&request.params_stream)?);
                request.params_stream = Vec::new();
            } else if request.params_stream.len().saturating_add(content.len()) > MAX_PARAMS_BYTES {
                return Err(ProtocolError::ParamsTooLarge);
            } else {
                request.params_stream.extend_from_slice(content);
            }
            Ok(Reply::nothing())
        }
        FCGI_STDIN => {
            if request.params.is_none() {
                return Err(ProtocolError::Malformed("STDIN before the end of PARAMS"));
            }
            if !content.is_empty() {
                // One byte past the cap is kept so the handler can tell a
                // body over the limit from one exactly at it.
                let room = max_body
                    .saturating_add(1)
                    .saturating_sub(request.body.len());
                let kept = content.get(..room.min(content.len())).unwrap_or_default();
                request.body.extend_from_slice(kept);
                return Ok(Reply::nothing());
            }
            let Some(finished) = active.take() else {
                return Ok(Reply::nothing());
            };
            let params = finished.params.unwrap_or_default();
            let mut body_reader: &[u8] = &finished.body;
            let answer: Answer = handler(params, &mut body_reader).into();
            let parts = [answer.bytes.as_slice(), answer.body.as_slice()];
            let output = match answer.rest {
                None => response_records(request_id, &parts),
                // The end records follow the rest.
                Some(_) => stdout_records(request_id, &parts),
            };
            Ok(Reply {
                output,
                rest: answer.rest.map(|rest| (request_id, rest)),
                close_connection: !finished.keep_connection,
            })
        }
        _ => Ok(Reply::nothing()),
    }
}

fn begin_request(
    request_id: u16,
    content: &[u8],
    active: &mut Option<ActiveRequest>,
) -> Result<Reply, ProtocolError> {
    let Some(&[role_high, role_low, flags]) = content.get(..3) else {
        return Err(ProtocolError::Malformed(
            "BEGIN_REQUEST shorter than 3 bytes",
        ));
    };
    let keep_connection = flags & FCGI_KEEP_CONN != 0;
    if let Some(current) = active {
        if current.request_id == request_id {
            return Err(ProtocolError::Malformed(
                "BEGIN_REQUEST for the active request",
            ));
        }
        return Ok(Reply {
            output: end_request_record(request_id, FCGI_CANT_MPX_CONN),
            rest: None,
            close_connection: false,
        });
    }
    if u16::from_be_bytes([role_high, role_low]) != FCGI_RESPONDER {
        return Ok(Reply {
            output: end_request_record(request_id, FCGI_UNKNOWN_ROLE),
            rest: None,
            close_connection: !keep_connection,
        });
    }
    *active = Some(ActiveRequest {
        request_id,
        keep_connection,
        params_stream: Vec::new(),
        params: None,
        body: Vec::new(),
    });
    Ok(Reply::nothing())
}

/// Decodes name-value pairs: each length is one byte below 128, else four
/// bytes with the high bit set. Every slice is checked against what is
/// buffered, so a lying length fails here instead of allocating.
fn decode_pairs(mut stream: &[u8]) -> Result<Params, ProtocolError> {
    let mut pairs = Params::new();
    while !stream.is_empty() {
        let name_length = take_length(&mut stream)?;
        let value_length = take_length(&mut stream)?;
        let name = take_bytes(&mut stream, name_length)?;
        let value = take_bytes(&mut stream, value_length)?;
        pairs.push((name.to_vec(), value.to_vec()));
    }
    Ok(pairs)
}

fn take_length(stream: &mut &[u8]) -> Result<usize, ProtocolError> {
    let Some((&first, rest)) = stream.split_first() else {
        return Err(ProtocolError::Malformed(
            "name-value pair cut inside a length",
        ));
    };
    if first & 0x80 == 0 {
        *stream = rest;
        return Ok(usize::from(first));
    }
    let Some((&[byte0, byte1, byte2, byte3], rest)) = stream.split_first_chunk::<4>() else {
        return Err(ProtocolError::Malformed(
            "name-value pair cut inside a length",
        ));
    };
    *stream = rest;
    usize::try_from(u32::from_be_bytes([byte0 & 0x7f, byte1, byte2, byte3]))
        .map_err(|_| ProtocolError::Malformed("name-value length beyond the address space"))
}

fn take_bytes<'stream>(
    stream: &mut &'stream [u8],
    length: usize,
) -> Result<&'stream [u8], ProtocolError> {
    let Some((taken, rest)) = stream.split_at_checked(length) else {
        return Err(ProtocolError::Malformed(
            "name-value length beyond the buffered content",
        ));
    };
    *stream = rest;
    Ok(taken)
}

fn encode_pair(output: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    encode_length(output, name.len());
    encode_length(output, value.len());
    output.extend_from_slice(name);
    output.extend_from_slice(value);
}

/// Callers only encode short, known names and values; a length past 31
/// bits cannot occur and is clamped rather than wrapped.
fn encode_length(output: &mut Vec<u8>, length: usize) {
    match u8::try_from(length) {
        Ok(short) if short < 0x80 => output.push(short),
        _ => {
            let long = u32::try_from(length).unwrap_or(u32::MAX) | 0x8000_0000;
            output.extend_from_slice(&long.to_be_bytes());
        }
    }
}

/// The whole answer to one request in one buffer, so that it costs a single
/// write: STDOUT records, the empty STDOUT, then END_REQUEST.
fn response_records(request_id: u16, parts: &[&[u8]]) -> Vec<u8> {
    let mut output = stdout_records(request_id, parts);
    push_end(&mut output, request_id);
    output
}

/// `parts`, one after the other, as STDOUT records of at most 65535 bytes
/// each (none for none; a record never spans two parts).
fn stdout_records(request_id: u16, parts: &[&[u8]]) -> Vec<u8> {
    let (records, bytes) = parts
        .iter()
        .fold((2usize, 0usize), |(records, bytes), part| {
            (
                records.saturating_add(part.len().div_ceil(MAX_CONTENT_BYTES)),
                bytes.saturating_add(part.len()),
            )
        });
    let capacity = records
        .saturating_mul(HEADER_BYTES)
        .saturating_add(bytes)
        .saturating_add(8);
    let mut output = Vec::with_capacity(capacity);
    for part in parts {
        for chunk in part.chunks(MAX_CONTENT_BYTES) {
            push_record(&mut output, FCGI_STDOUT, request_id, chunk);
        }
    }
    output
}

/// The empty STDOUT that ends the response, then END_REQUEST.
fn push_end(output: &mut Vec<u8>, request_id: u16) {
    push_record(output, FCGI_STDOUT, request_id, &[]);
    output.extend_from_slice(&end_request_record(request_id, FCGI_REQUEST_COMPLETE));
}

/// Copies `rest` out as full STDOUT records, one write each, then ends the
/// request. A read error mid-way cannot be answered any more (the head is
/// out): the connection is closed, and the web server sees a body shorter
/// than its `Content-Length`.
fn write_rest<Writer: Write + ?Sized>(
    writer: &mut Writer,
    request_id: u16,
    mut rest: Box<dyn Read>,
) -> Result<(), ProtocolError> {
    let mut record = Vec::with_capacity(HEADER_BYTES + MAX_CONTENT_BYTES);
    let mut chunk = vec![0u8; MAX_CONTENT_BYTES];
    loop {
        let filled = fill(&mut rest, &mut chunk).map_err(ProtocolError::Io)?;
        let Some(content) = chunk.get(..filled) else {
            break;
        };
        if content.is_empty() {
            break;
        }
        record.clear();
        push_record(&mut record, FCGI_STDOUT, request_id, content);
        writer.write_all(&record).map_err(ProtocolError::Io)?;
    }
    record.clear();
    push_end(&mut record, request_id);
    writer.write_all(&record).map_err(ProtocolError::Io)
}

/// Reads until `buffer` is full or the reader ends; the count read.
fn fill(reader: &mut dyn Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(room) = buffer.get_mut(filled..) {
        if room.is_empty() {
            break;
        }
        match reader.read(room) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// END_REQUEST with application status 0 and the given protocol status.
fn end_request_record(request_id: u16, protocol_status: u8) -> Vec<u8> {
    let body = [0, 0, 0, 0, protocol_status, 0, 0, 0];
    let mut output = Vec::with_capacity(HEADER_BYTES + body.len());
    push_record(&mut output, FCGI_END_REQUEST, request_id, &body);
    output
}

/// Appends one record without padding. Callers pass at most 65535 bytes of
/// content (the length field holds no more); anything beyond is cut, so a
/// length and its content can never disagree.
fn push_record(output: &mut Vec<u8>, record_type: u8, request_id: u16, content: &[u8]) {
    let content_length = u16::try_from(content.len()).unwrap_or(u16::MAX);
    let content = content
        .get(..usize::from(content_length))
        .unwrap_or_default();
    let [id_high, id_low] = request_id.to_be_bytes();
    let [length_high, length_low] = content_length.to_be_bytes();
    output.extend_from_slice(&[
        FCGI_VERSION_1,
        record_type,
        id_high,
        id_low,
        length_high,
        length_low,
        0,
        0,
    ]);
    output.extend_from_slice(content);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// An in-memory connection: the web server's bytes in, the responder's
    /// bytes out, and a count of write calls.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
        writes: usize,
    }

    impl Duplex {
        fn new(input: Vec<u8>) -> Duplex {
            Duplex {
                input: Cursor::new(input),
                output: Vec::new(),
                writes: 0,
            }
        }
    }

    impl Read for Duplex {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            self.input.read(buffer)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.output.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A record as a web server might send it, padded to a multiple of 8
    /// with non-zero bytes so that skipping padding is exercised.
    fn record(record_type: u8, request_id: u16, content: &[u8]) -> Vec<u8> {
        let padding = (8 - content.len() % 8) % 8;
        let mut bytes = vec![1, record_type];
        bytes.extend_from_slice(&request_id.to_be_bytes());
        bytes.extend_from_slice(&u16::try_from(content.len()).unwrap().to_be_bytes());
        bytes.push(u8::try_from(padding).unwrap());
        bytes.push(0);
        bytes.extend_from_slice(content);
        bytes.extend(std::iter::repeat_n(0xAA, padding));
        bytes
    }

    fn begin(request_id: u16, role: u16, flags: u8) -> Vec<u8> {
        let mut content = role.to_be_bytes().to_vec();
        content.extend_from_slice(&[flags, 0, 0, 0, 0, 0]);
        record(FCGI_BEGIN_REQUEST, request_id, &content)
    }

    fn pairs(list: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (name, value) in list {
            encode_pair(&mut bytes, name, value);
        }
        bytes
    }

    /// A complete request: BEGIN, one PARAMS record (none without params,
    /// since an empty one ends the stream), empty PARAMS, STDIN records of
    /// the given chunks, empty STDIN.
    fn request(request_id: u16, flags: u8, params: &[(&[u8], &[u8])], body: &[&[u8]]) -> Vec<u8> {
        let mut bytes = begin(request_id, FCGI_RESPONDER, flags);
        if !params.is_empty() {
            bytes.extend(record(FCGI_PARAMS, request_id, &pairs(params)));
        }
        bytes.extend(record(FCGI_PARAMS, request_id, &[]));
        for chunk in body {
            bytes.extend(record(FCGI_STDIN, request_id, chunk));
        }
        bytes.extend(record(FCGI_STDIN, request_id, &[]));
        bytes
    }

    /// A record the responder wrote: type, request id, content.
    type DecodedRecord = (u8, u16, Vec<u8>);

    /// A body as the STDIN records that carry it.
    type Chunks<'a> = &'a [&'a [u8]];

    /// Decodes the responder's output into records.
    fn records(mut output: &[u8]) -> Vec<DecodedRecord> {
        let mut decoded = Vec::new();
        while !output.is_empty() {
            assert_eq!(output[0], 1, "version");
            let record_type = output[1];
            let request_id = u16::from_be_bytes([output[2], output[3]]);
            let length = usize::from(u16::from_be_bytes([output[4], output[5]]));
            let padding = usize::from(output[6]);
            decoded.push((
                record_type,
                request_id,
                output[HEADER_BYTES..HEADER_BYTES + length].to_vec(),
            ));
            output = &output[HEADER_BYTES + length + padding..];
        }
        decoded
    }

    fn end_request(request_id: u16, protocol_status: u8) -> DecodedRecord {
        (
            FCGI_END_REQUEST,
            request_id,
            vec![0, 0, 0, 0, protocol_status, 0, 0, 0],
        )
    }

    /// What the handler saw on each call.
    #[derive(Debug, Default)]
    struct Seen {
        params: Vec<Params>,
        bodies: Vec<Vec<u8>>,
    }

    /// Serves `input` with a handler that records its arguments and answers
    /// `response`.
    fn serve(
        input: Vec<u8>,
        max_body: usize,
        response: &[u8],
    ) -> (Result<(), ProtocolError>, Duplex, Seen) {
        let mut duplex = Duplex::new(input);
        let mut seen = Seen::default();
        let result = serve_connection(
            &mut duplex,
            max_body,
            &mut |params: Params, body: &mut dyn Read| {
                let mut bytes = Vec::new();
                body.read_to_end(&mut bytes).unwrap();
                seen.params.push(params.clone());
                seen.bodies.push(bytes);
                response.to_vec()
            },
        );
        (result, duplex, seen)
    }

    fn owned(list: &[(&[u8], &[u8])]) -> Params {
        list.iter()
            .map(|(name, value)| (name.to_vec(), value.to_vec()))
            .collect()
    }

    const RESPONSE: &[u8] = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok";

    #[test]
    fn a_simple_get_is_decoded_exactly_and_answered_in_one_write() {
        let params: &[(&[u8], &[u8])] = &[
            (b"REQUEST_METHOD", b"GET"),
            (b"REQUEST_URI", b"/api/health"),
            (b"EMPTY", b""),
        ];
        let (result, duplex, seen) = serve(request(1, 0, params, &[]), 1024, RESPONSE);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(seen.params, vec![owned(params)]);
        assert_eq!(seen.bodies, vec![Vec::<u8>::new()]);
        assert_eq!(
            records(&duplex.output),
            vec![
                (FCGI_STDOUT, 1, RESPONSE.to_vec()),
                (FCGI_STDOUT, 1, vec![]),
                end_request(1, FCGI_REQUEST_COMPLETE),
            ]
        );
        assert_eq!(duplex.writes, 1);
    }

    #[test]
    fn non_utf8_values_and_every_param_after_them_arrive_intact() {
        let params: &[(&[u8], &[u8])] = &[
            (b"REQUEST_METHOD", b"POST"),
            (b"HTTP_USER_AGENT", b"Mozilla \xe9"),
            (b"HTTP_X_\xff", b"\x00\x80\xfe"),
            (b"REQUEST_URI", b"/api/meals/sync"),
            (b"CONTENT_LENGTH", b"0"),
        ];
        let (result, _, seen) = serve(request(1, 0, params, &[]), 1024, RESPONSE);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(seen.params, vec![owned(params)]);
    }

    #[test]
    fn pairs_split_across_records_and_four_byte_lengths_decode() {
        let long_value = vec![b'v'; 300];
        let long_name = vec![b'N'; 200];
        let stream = pairs(&[
            (b"REQUEST_METHOD", b"GET"),
            (b"HTTP_COOKIE", &long_value),
            (&long_name, b"x"),
        ]);
        // Split inside the first pair's name, then inside the 4-byte
        // length of the cookie's value.
        let cuts = [5, 20];
        let mut input = begin(1, FCGI_RESPONDER, 0);
        input.extend(record(FCGI_PARAMS, 1, &stream[..cuts[0]]));
        input.extend(record(FCGI_PARAMS, 1, &stream[cuts[0]..cuts[1]]));
        input.extend(record(FCGI_PARAMS, 1, &stream[cuts[1]..]));
        input.extend(record(FCGI_PARAMS, 1, &[]));
        input.extend(record(FCGI_STDIN, 1, &[]));
        let (result, _, seen) = serve(input, 1024, RESPONSE);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            seen.params,
            vec![owned(&[
                (b"REQUEST_METHOD", b"GET"),
                (b"HTTP_COOKIE", &long_value),
                (&long_name, b"x"),
            ])]
        );
    }

    #[test]
    fn a_body_over_several_stdin_records_is_joined() {
        let (result, _, seen) = serve(
            request(1, 0, &[], &[b"{\"a\":", b"1", b",\"b\":2}"]),
            1024,
            RESPONSE,
        );
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(seen.bodies, vec![b"{\"a\":1,\"b\":2}".to_vec()]);
    }

    #[test]
    fn a_body_past_the_cap_is_kept_to_one_byte_over_and_the_rest_discarded() {
        let cases: &[(usize, Chunks, &[u8])] = &[
            (10, &[b"0123456789"], b"0123456789"),
            (10, &[b"0123456", b"789abcdef", b"ghij"], b"0123456789a"),
            (0, &[b"x", b"y"], b"x"),
        ];
        for (cap, chunks, expected) in cases {
            let (result, duplex, seen) = serve(request(1, 0, &[], chunks), *cap, RESPONSE);
            assert!(result.is_ok(), "cap {cap}: {result:?}");
            assert_eq!(seen.bodies, vec![expected.to_vec()], "cap {cap}");
            assert_eq!(records(&duplex.output).len(), 3, "cap {cap}");
        }
    }

    #[test]
    fn a_response_over_65535_bytes_is_split_into_full_records() {
        let response: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let (result, duplex, _) = serve(request(7, 0, &[], &[]), 1024, &response);
        assert!(result.is_ok(), "{result:?}");
        let answer = records(&duplex.output);
        let lengths: Vec<usize> = answer.iter().map(|(_, _, content)| content.len()).collect();
        assert_eq!(lengths, vec![65535, 65535, 150_000 - 2 * 65535, 0, 8]);
        let joined: Vec<u8> = answer
            .iter()
            .filter(|(record_type, _, _)| *record_type == FCGI_STDOUT)
            .flat_map(|(_, _, content)| content.clone())
            .collect();
        assert_eq!(joined, response);
        assert_eq!(answer.last(), Some(&end_request(7, FCGI_REQUEST_COMPLETE)));
        assert_eq!(duplex.writes, 1);
    }

    /// A reader that hands out at most 1000 bytes a call, as a pipe or a
    /// file may: the records must still be full.
    struct Dribble(Cursor<Vec<u8>>);

    impl Read for Dribble {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            let at_most = buffer.len().min(1000);
            self.0.read(&mut buffer[..at_most])
        }
    }

    #[test]
    fn a_head_and_a_body_go_out_in_one_write_as_records_of_each() {
        let head = b"Status: 200 OK\r\nContent-Length: 70000\r\n\r\n".to_vec();
        let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut duplex = Duplex::new(request(5, 0, &[], &[]));
        let result = serve_connection(&mut duplex, 1024, &mut |_: Params, _: &mut dyn Read| {
            Answer {
                bytes: head.clone(),
                body: body.clone(),
                rest: None,
            }
        });
        assert!(result.is_ok(), "{result:?}");
        let answer = records(&duplex.output);
        let lengths: Vec<usize> = answer.iter().map(|(_, _, c)| c.len()).collect();
        assert_eq!(lengths, vec![head.len(), 65535, 70_000 - 65535, 0, 8]);
        let stdout: Vec<u8> = answer
            .iter()
            .filter(|(record_type, _, _)| *record_type == FCGI_STDOUT)
            .flat_map(|(_, _, content)| content.clone())
            .collect();
        assert_eq!(stdout, [head, body].concat());
        assert_eq!(duplex.writes, 1);
    }

    #[test]
    fn a_streamed_rest_follows_the_head_in_full_records_then_the_end() {
        let head = b"Status: 200 OK\r\nContent-Length: 200000\r\n\r\n".to_vec();
        let rest: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        let mut input = request(3, FCGI_KEEP_CONN, &[], &[]);
        input.extend(request(4, 0, &[], &[]));
        let mut duplex = Duplex::new(input);
        let mut calls = 0;
        let result = serve_connection(&mut duplex, 1024, &mut |_: Params, _: &mut dyn Read| {
            calls += 1;
            Answer {
                bytes: head.clone(),
                body: Vec::new(),
                rest: Some(Box::new(Dribble(Cursor::new(rest.clone())))),
            }
        });
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(calls, 2);
        let answer = records(&duplex.output);
        for request_id in [3, 4] {
            let of_request: Vec<&DecodedRecord> = answer
                .iter()
                .filter(|(_, id, _)| *id == request_id)
                .collect();
            let lengths: Vec<usize> = of_request.iter().map(|(_, _, c)| c.len()).collect();
            assert_eq!(
                lengths,
                vec![head.len(), 65535, 65535, 65535, 200_000 - 3 * 65535, 0, 8],
                "request {request_id}"
            );
            let stdout: Vec<u8> = of_request
                .iter()
                .filter(|(record_type, _, _)| *record_type == FCGI_STDOUT)
                .flat_map(|(_, _, content)| content.clone())
                .collect();
            assert_eq!(stdout[..head.len()], head[..]);
            assert_eq!(stdout[head.len()..], rest[..]);
            assert_eq!(
                of_request.last().copied(),
                Some(&end_request(request_id, FCGI_REQUEST_COMPLETE))
            );
        }
    }

    #[test]
    fn keep_conn_serves_each_request_and_its_absence_closes_after_one() {
        let first: &[(&[u8], &[u8])] = &[(b"REQUEST_URI", b"/first")];
        let second: &[(&[u8], &[u8])] = &[(b"REQUEST_URI", b"/second")];
        // (flags of the first request, handler calls, END_REQUEST records)
        let cases = [(FCGI_KEEP_CONN, 2, 2), (0, 1, 1)];
        for (flags, calls, ends) in cases {
            let mut input = request(1, flags, first, &[b"a"]);
            input.extend(request(2, 0, second, &[b"b"]));
            let (result, duplex, seen) = serve(input, 1024, RESPONSE);
            assert!(result.is_ok(), "flags {flags}: {result:?}");
            assert_eq!(seen.params.len(), calls, "flags {flags}");
            assert_eq!(seen.params[0], owned(first));
            let end_count = records(&duplex.output)
                .iter()
                .filter(|(record_type, _, _)| *record_type == FCGI_END_REQUEST)
                .count();
            assert_eq!(end_count, ends, "flags {flags}");
        }
    }

    #[test]
    fn management_records_and_unknown_roles_are_answered() {
        let asked = pairs(&[
            (b"FCGI_MAX_CONNS", b""),
            (b"FCGI_MPXS_CONNS", b""),
            (b"FCGI_UNHEARD_OF", b""),
            (b"FCGI_MAX_REQS", b""),
        ]);
        let expected_values = pairs(&[
            (b"FCGI_MAX_CONNS", b"1"),
            (b"FCGI_MAX_REQS", b"1"),
            (b"FCGI_MPXS_CONNS", b"0"),
        ]);
        let cases: Vec<(&str, Vec<u8>, Vec<DecodedRecord>)> = vec![
            (
                "get values",
                record(FCGI_GET_VALUES, 0, &asked),
                vec![(FCGI_GET_VALUES_RESULT, 0, expected_values)],
            ),
            (
                "get values asking nothing known",
                record(FCGI_GET_VALUES, 0, &pairs(&[(b"OTHER", b"")])),
                vec![(FCGI_GET_VALUES_RESULT, 0, vec![])],
            ),
            (
                "unknown management type",
                record(42, 0, b"whatever"),
                vec![(FCGI_UNKNOWN_TYPE, 0, vec![42, 0, 0, 0, 0, 0, 0, 0])],
            ),
            (
                "authorizer role",
                begin(3, 2, 0),
                vec![end_request(3, FCGI_UNKNOWN_ROLE)],
            ),
        ];
        for (name, input, expected) in cases {
            let (result, duplex, seen) = serve(input, 1024, RESPONSE);
            assert!(result.is_ok(), "{name}: {result:?}");
            assert_eq!(records(&duplex.output), expected, "{name}");
            assert!(seen.params.is_empty(), "{name}");
        }
    }

    #[test]
    fn abort_multiplexing_and_foreign_ids_do_not_disturb_the_active_request() {
        // An aborted request gets END_REQUEST and no handler call.
        let mut input = begin(1, FCGI_RESPONDER, 0);
        input.extend(record(FCGI_PARAMS, 1, &pairs(&[(b"A", b"1")])));
        input.extend(record(FCGI_ABORT_REQUEST, 1, &[]));
        let (result, duplex, seen) = serve(input, 1024, RESPONSE);
        assert!(result.is_ok(), "{result:?}");
        assert!(seen.params.is_empty());
        assert_eq!(
            records(&duplex.output),
            vec![end_request(1, FCGI_REQUEST_COMPLETE)]
        );

        // A second BEGIN_REQUEST is refused, records for other ids are
        // dropped, and the first request is answered untouched.
        let mut input = begin(1, FCGI_RESPONDER, 0);
        input.extend(begin(2, FCGI_RESPONDER, 0));
        input.extend(record(FCGI_PARAMS, 1, &pairs(&[(b"A", b"1")])));
        input.extend(record(FCGI_PARAMS, 2, &pairs(&[(b"B", b"2")])));
        input.extend(record(FCGI_ABORT_REQUEST, 2, &[]));
        input.extend(record(FCGI_PARAMS, 1, &[]));
        input.extend(record(FCGI_STDIN, 9, b"not ours"));
        input.extend(record(8, 1, b"FCGI_DATA is for filters"));
        input.extend(record(FCGI_STDIN, 1, b"body"));
        input.extend(record(FCGI_STDIN, 1, &[]));
        let (result, duplex, seen) = serve(input, 1024, RESPONSE);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(seen.params, vec![owned(&[(b"A", b"1")])]);
        assert_eq!(seen.bodies, vec![b"body".to_vec()]);
        let answer = records(&duplex.output);
        assert_eq!(answer.first(), Some(&end_request(2, FCGI_CANT_MPX_CONN)));
        assert_eq!(answer.last(), Some(&end_request(1, FCGI_REQUEST_COMPLETE)));
    }

    #[test]
    fn malformed_input_ends_the_connection_with_an_error() {
        let mut params_then_more_params = begin(1, FCGI_RESPONDER, 0);
        params_then_more_params.extend(record(FCGI_PARAMS, 1, &[]));
        params_then_more_params.extend(record(FCGI_PARAMS, 1, &pairs(&[(b"A", b"1")])));
        let mut stdin_before_params_end = begin(1, FCGI_RESPONDER, 0);
        stdin_before_params_end.extend(record(FCGI_STDIN, 1, b"x"));
        let mut begin_twice = begin(1, FCGI_RESPONDER, 0);
        begin_twice.extend(begin(1, FCGI_RESPONDER, 0));
        let with_params = |stream: &[u8]| {
            let mut bytes = begin(1, FCGI_RESPONDER, 0);
            bytes.extend(record(FCGI_PARAMS, 1, stream));
            bytes.extend(record(FCGI_PARAMS, 1, &[]));
            bytes
        };
        let mut bad_version = record(FCGI_GET_VALUES, 0, &[]);
        bad_version[0] = 2;
        let mut padding_cut = record(FCGI_GET_VALUES, 0, b"abc");
        padding_cut.truncate(padding_cut.len() - 1);

        type Check = fn(&ProtocolError) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("bad version", bad_version, |error| {
                matches!(error, ProtocolError::UnsupportedVersion(2))
            }),
            ("header cut", vec![1, 9, 0], |error| {
                matches!(error, ProtocolError::Truncated)
            }),
            (
                "content cut",
                vec![1, 9, 0, 0, 0, 100, 0, 0, 1, 2],
                |error| matches!(error, ProtocolError::Truncated),
            ),
            ("padding cut", padding_cut, |error| {
                matches!(error, ProtocolError::Truncated)
            }),
            (
                "end of stream mid-request",
                begin(1, FCGI_RESPONDER, 0),
                |error| matches!(error, ProtocolError::Truncated),
            ),
            (
                "begin request too short",
                record(FCGI_BEGIN_REQUEST, 1, &[0, 1]),
                |error| matches!(error, ProtocolError::Malformed(_)),
            ),
            ("begin twice for one id", begin_twice, |error| {
                matches!(error, ProtocolError::Malformed(_))
            }),
            (
                "value past the content",
                with_params(&[1, 5, b'A', b'x']),
                |error| matches!(error, ProtocolError::Malformed(_)),
            ),
            (
                "absurd four-byte length",
                with_params(&[1, 0xff, 0xff, 0xff, 0xff, b'A']),
                |error| matches!(error, ProtocolError::Malformed(_)),
            ),
            (
                "cut inside a four-byte length",
                with_params(&[0x80, 0]),
                |error| matches!(error, ProtocolError::Malformed(_)),
            ),
            ("params after their end", params_then_more_params, |error| {
                matches!(error, ProtocolError::Malformed(_))
            }),
            (
                "stdin before params end",
                stdin_before_params_end,
                |error| matches!(error, ProtocolError::Malformed(_)),
            ),
            (
                "undecodable get values",
                record(FCGI_GET_VALUES, 0, &[9, 9]),
                |error| matches!(error, ProtocolError::Malformed(_)),
            ),
        ];
        for (name, input, check) in cases {
            let (result, _, seen) = serve(input, 1024, RESPONSE);
            match result {
                Err(error) => assert!(check(&error), "{name}: {error:?}"),
                Ok(()) => panic!("{name}: accepted"),
            }
            assert!(seen.params.is_empty(), "{name}");
        }
    }

    #[test]
    fn an_oversized_params_stream_is_refused() {
        let chunk = vec![0u8; MAX_CONTENT_BYTES];
        let mut input = begin(1, FCGI_RESPONDER, 0);
        for _ in 0..=MAX_PARAMS_BYTES / MAX_CONTENT_BYTES {
            input.extend(record(FCGI_PARAMS, 1, &chunk));
        }
        input.extend(record(FCGI_PARAMS, 1, &[]));
        input.extend(record(FCGI_STDIN, 1, &[]));
        let (result, duplex, seen) = serve(input, 1024, RESPONSE);
        assert!(
            matches!(result, Err(ProtocolError::ParamsTooLarge)),
            "{result:?}"
        );
        assert!(seen.params.is_empty());
        assert!(duplex.output.is_empty());
    }

    /// xorshift64: deterministic, good enough to scatter bytes.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> usize {
            usize::try_from(self.next() % bound).unwrap()
        }

        fn bytes(&mut self, length: usize) -> Vec<u8> {
            (0..length).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn pseudo_random_input_never_panics() {
        let mut random = Xorshift(0x9E37_79B9_7F4A_7C15);
        let valid = {
            let mut bytes = request(
                1,
                FCGI_KEEP_CONN,
                &[(b"REQUEST_METHOD", b"POST"), (b"HTTP_X", &[0x80; 200])],
                &[b"body", b"more"],
            );
            bytes.extend(record(
                FCGI_GET_VALUES,
                0,
                &pairs(&[(b"FCGI_MAX_REQS", b"")]),
            ));
            bytes.extend(request(2, 0, &[(b"A", b"B")], &[b"x"]));
            bytes
        };
        for _ in 0..300 {
            // Raw garbage, mostly rejected at the header.
            let length = random.below(200);
            let garbage = random.bytes(length);
            let _ = serve(garbage, 16, RESPONSE);

            // A valid exchange with a few bytes flipped or the tail cut.
            let mut mutated = valid.clone();
            for _ in 0..=random.below(4) {
                let position = random.below(mutated.len() as u64);
                mutated[position] = random.next() as u8;
            }
            mutated.truncate(random.below(mutated.len() as u64 + 1));
            let _ = serve(mutated, 16, RESPONSE);

            // Well-framed records of random types, ids and contents, which
            // reach the request state machine and the pair decoder.
            let mut framed = Vec::new();
            for _ in 0..random.below(12) {
                let record_type = random.below(13) as u8;
                let request_id = random.below(3) as u16;
                let content = match record_type {
                    FCGI_BEGIN_REQUEST => vec![0, random.below(3) as u8, random.below(2) as u8],
                    _ => {
                        let length = random.below(40);
                        random.bytes(length)
                    }
                };
                framed.extend(record(record_type, request_id, &content));
            }
            let _ = serve(framed, 16, RESPONSE);
        }
    }

    /// Sends `input` from a client thread and returns everything the
    /// responder wrote before closing.
    fn exchange_over<Client>(connect: Client, listening_fd: RawFd, input: Vec<u8>) -> Vec<u8>
    where
        Client: FnOnce() -> Box<dyn ReadWrite> + Send + 'static,
    {
        let client = std::thread::spawn(move || {
            let mut stream = connect();
            stream.write_all(&input).unwrap();
            let mut output = Vec::new();
            stream.read_to_end(&mut output).unwrap();
            output
        });
        let mut connection = accept_connection(listening_fd).unwrap();
        let mut handler = |params: Params, body: &mut dyn Read| {
            let mut bytes = Vec::new();
            body.read_to_end(&mut bytes).unwrap();
            let mut response = b"Status: 200 OK\r\n\r\n".to_vec();
            response.extend_from_slice(&params[0].1);
            response.extend_from_slice(&bytes);
            response
        };
        serve_connection(&mut connection, 1024, &mut handler).unwrap();
        drop(connection);
        client.join().unwrap()
    }

    trait ReadWrite: Read + Write {}
    impl<Stream: Read + Write> ReadWrite for Stream {}

    fn socket_input() -> Vec<u8> {
        request(1, 0, &[(b"HTTP_USER_AGENT", b"Mozilla \xe9")], &[b" hi"])
    }

    fn socket_expected() -> Vec<DecodedRecord> {
        vec![
            (
                FCGI_STDOUT,
                1,
                b"Status: 200 OK\r\n\r\nMozilla \xe9 hi".to_vec(),
            ),
            (FCGI_STDOUT, 1, vec![]),
            end_request(1, FCGI_REQUEST_COMPLETE),
        ]
    }

    #[test]
    fn a_unix_socket_connection_is_accepted_and_served() {
        use std::os::fd::AsRawFd;
        use std::os::unix::net::{UnixListener, UnixStream};
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let directory =
            std::env::temp_dir().join(format!("healthsync-fcgi-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("socket");
        let listener = UnixListener::bind(&path).unwrap();
        let client_path = path.clone();
        let output = exchange_over(
            move || Box::new(UnixStream::connect(client_path).unwrap()),
            listener.as_raw_fd(),
            socket_input(),
        );
        drop(listener);
        std::fs::remove_dir_all(&directory).unwrap();
        assert_eq!(records(&output), socket_expected());
    }

    #[test]
    fn a_tcp_connection_is_accepted_and_served() {
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let output = exchange_over(
            move || Box::new(TcpStream::connect(address).unwrap()),
            listener.as_raw_fd(),
            socket_input(),
        );
        assert_eq!(records(&output), socket_expected());
    }
}
