//! `fcgi_records`: bytes as what the web server sent on one FastCGI
//! connection, to `fcgi::serve_connection`. Any panic is a finding; so is
//! output that is not a sequence of well-formed FastCGI records, or a body
//! handed to the handler past the cap.

use std::io::{self, Cursor, Read, Write};

use healthsync::fcgi::{serve_connection, Params};

/// Small, so that bodies over the cap fit in inputs libFuzzer makes (4 KiB
/// by default); seeds/fcgi_records/post_over_cap starts past it.
const MAX_BODY: usize = 512;
const RESPONSE: &[u8] = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok";
const FCGI_END_REQUEST: u8 = 3;

/// The fuzz input as the read side, a sink as the write side.
struct Duplex<'input> {
    input: Cursor<&'input [u8]>,
    output: Vec<u8>,
}

impl Read for Duplex<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.input.read(buffer)
    }
}

impl Write for Duplex<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn handler(_params: Params, body: &mut dyn Read) -> Vec<u8> {
    // Reads the body to the end, never more than one byte past the cap.
    let mut kept = Vec::new();
    let read = body
        .take(MAX_BODY as u64 + 2)
        .read_to_end(&mut kept)
        .expect("an in-memory body reads without error");
    assert!(read <= MAX_BODY + 1, "body of {read} bytes passed the cap");
    RESPONSE.to_vec()
}

/// Every byte of the output belongs to a version-1 record whose content
/// and padding fit, and every END_REQUEST carries 8 bytes.
fn check_records(mut output: &[u8]) {
    while !output.is_empty() {
        assert!(output.len() >= 8, "output ends inside a record header");
        let version = output[0];
        let record_type = output[1];
        let content_length = usize::from(u16::from_be_bytes([output[4], output[5]]));
        let padding_length = usize::from(output[6]);
        assert_eq!(version, 1, "record version");
        let record_length = 8 + content_length + padding_length;
        assert!(
            output.len() >= record_length,
            "record of {record_length} bytes with {} left",
            output.len()
        );
        if record_type == FCGI_END_REQUEST {
            assert_eq!(content_length, 8, "END_REQUEST body length");
        }
        output = &output[record_length..];
    }
}

pub fn check(data: &[u8]) {
    let mut stream = Duplex {
        input: Cursor::new(data),
        output: Vec::new(),
    };
    let mut handle = handler;
    // Err is a fine answer to bad input; only a panic is not.
    let _ = serve_connection(&mut stream, MAX_BODY, &mut handle);
    check_records(&stream.output);
}
