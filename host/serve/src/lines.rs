//! Reading a child's output line by line, whatever its encoding.
//!
//! `tokio`'s `lines()` stops at the first line that is not UTF-8, and a
//! reader that stops drops the pipe, so the child's next write fails. The
//! model's workers and pip print whatever their libraries print: every
//! reader of a child's output decodes lossily and keeps reading.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Calls `f` with each line of `pipe` (without its line ending), decoded
/// lossily, until the pipe closes.
pub async fn for_each_line<R: AsyncRead + Unpin>(pipe: R, mut f: impl FnMut(&str)) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                f(line.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_utf8_does_not_stop_the_reader() {
        let input: &[u8] = b"one\n\xff\xfe bad\r\nthree";
        let mut got = Vec::new();
        for_each_line(input, |l| got.push(l.to_string())).await;
        assert_eq!(got, ["one", "\u{fffd}\u{fffd} bad", "three"]);
    }
}
