//! Parallel gzip: the input is cut into members that are compressed independently on a
//! few worker threads and written to the sink in order.
//!
//! A multi-member gzip stream is valid (RFC 1952 §2.2) and every reader we care about
//! (Go's `compress/gzip`, flate2's `MultiGzDecoder`, `gzip -d`, pigz) decodes it as one
//! stream. Because each member depends only on its own bytes and the level, the output is
//! identical whatever the number of workers: digests stay reproducible.
//!
//! Memory is bounded: at most `max_in_flight` members (input plus compressed output) exist
//! at any time, whatever the stream length.
//!
//! Workers are plain threads owned by this value, not the rayon pool: the caller may itself
//! run on a rayon worker (compressing several layers at once), and blocking a rayon worker
//! on work queued to the same pool can deadlock.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// A writer that gzips its input as a sequence of independent members.
pub(crate) struct ParallelGzip<W: Write> {
    sink: W,
    /// Input size at which a member is cut automatically (`usize::MAX`: only on request).
    member_size: usize,
    buf: Vec<u8>,
    next_seq: u64,
    write_seq: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    max_in_flight: usize,
    /// Compressed size of every member written so far, in order (for eStargz offsets).
    member_sizes: Vec<u64>,
    pool: Option<Pool>,
    /// Used when there is a single worker: compressing inline avoids thread hand-offs.
    inline: Option<libdeflater::Compressor>,
}

struct Pool {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the job channel makes every worker's recv fail, so they exit.
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn compress_member(c: &mut libdeflater::Compressor, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
    let n = c
        .gzip_compress(data, &mut out)
        .map_err(|e| io::Error::other(format!("gzip compression failed: {e:?}")))?;
    out.truncate(n);
    Ok(out)
}

fn new_compressor(level: i32) -> io::Result<libdeflater::Compressor> {
    let lvl = libdeflater::CompressionLvl::new(level)
        .map_err(|_| io::Error::other(format!("invalid gzip level {level}")))?;
    Ok(libdeflater::Compressor::new(lvl))
}

impl<W: Write> ParallelGzip<W> {
    /// `level` must already be validated (0–9). `workers` ≥ 1.
    pub(crate) fn new(sink: W, level: i32, member_size: usize, workers: usize) -> io::Result<Self> {
        let workers = workers.max(1);
        let (pool, inline) = if workers == 1 {
            (None, Some(new_compressor(level)?))
        } else {
            let (jtx, jrx) = sync_channel::<Job>(workers * 2);
            let (dtx, drx) = sync_channel::<Done>(workers * 4);
            let jrx = Arc::new(Mutex::new(jrx));
            let mut threads = Vec::with_capacity(workers);
            for i in 0..workers {
                let jrx = Arc::clone(&jrx);
                let dtx = dtx.clone();
                let mut c = new_compressor(level)?;
                let t = std::thread::Builder::new().name(format!("strata-gzip-{i}")).spawn(
                    move || {
                        loop {
                            // Hold the lock only while receiving, never while compressing.
                            let job = match jrx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            let Ok((seq, data)) = job else { return };
                            let out = compress_member(&mut c, &data);
                            if dtx.send((seq, out)).is_err() {
                                return;
                            }
                        }
                    },
                )?;
                threads.push(t);
            }
            (Some(Pool { jobs: Some(jtx), done: drx, threads }), None)
        };
        Ok(Self {
            sink,
            member_size,
            buf: Vec::new(),
            next_seq: 0,
            write_seq: 0,
            pending: BTreeMap::new(),
            max_in_flight: workers * 3,
            member_sizes: Vec::new(),
            pool,
            inline,
        })
    }

    /// Ends the current member (if it has any bytes) so the next byte starts a new one.
    /// Returns the index of the member the next byte will belong to.
    pub(crate) fn end_member(&mut self) -> io::Result<u64> {
        if !self.buf.is_empty() {
            let data = std::mem::take(&mut self.buf);
            self.submit(data)?;
        }
        Ok(self.next_seq)
    }

    fn submit(&mut self, data: Vec<u8>) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(c) = self.inline.as_mut() {
            let out = compress_member(c, &data)?;
            return self.write_member(out);
        }
        // Wait for results until there is room: bounds memory to max_in_flight members.
        while self.next_seq - self.write_seq > self.max_in_flight as u64 {
            self.recv_one(true)?;
        }
        let pool = self.pool.as_ref().ok_or_else(|| io::Error::other("gzip pool missing"))?;
        let jobs = pool.jobs.as_ref().ok_or_else(|| io::Error::other("gzip pool closed"))?;
        jobs.send((seq, data)).map_err(|_| io::Error::other("gzip worker exited"))?;
        // Opportunistically write whatever is already done.
        while self.recv_one(false)? {}
        Ok(())
    }

    /// Receives one finished member (blocking or not) and writes every member that is now
    /// next in order. Returns whether something was received.
    fn recv_one(&mut self, block: bool) -> io::Result<bool> {
        let Some(pool) = self.pool.as_ref() else { return Ok(false) };
        let (seq, out) = if block {
            pool.done.recv().map_err(|_| io::Error::other("gzip workers exited"))?
        } else {
            match pool.done.try_recv() {
                Ok(v) => v,
                Err(_) => return Ok(false),
            }
        };
        self.pending.insert(seq, out?);
        while let Some(out) = self.pending.remove(&self.write_seq) {
            self.write_member(out)?;
        }
        Ok(true)
    }

    fn write_member(&mut self, out: Vec<u8>) -> io::Result<()> {
        self.sink.write_all(&out)?;
        self.member_sizes.push(out.len() as u64);
        self.write_seq += 1;
        Ok(())
    }

    /// Compressed sizes of the members written so far.
    pub(crate) fn member_sizes(&self) -> &[u64] {
        &self.member_sizes
    }

    /// Waits for every submitted member to be written.
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        while self.write_seq < self.next_seq {
            self.recv_one(true)?;
        }
        Ok(())
    }

    /// Writes raw bytes straight to the sink after draining (the eStargz footer is a
    /// hand-built gzip member).
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.end_member()?;
        self.drain()?;
        self.sink.write_all(bytes)?;
        self.member_sizes.push(bytes.len() as u64);
        self.next_seq += 1;
        self.write_seq += 1;
        Ok(())
    }

    /// Flushes the last member and returns the sink. An empty input still produces one
    /// (empty) member, since a gzip file must contain at least one.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if self.next_seq == 0 || !self.buf.is_empty() {
            let data = std::mem::take(&mut self.buf);
            self.submit(data)?;
        }
        self.drain()?;
        self.sink.flush()?;
        self.pool.take();
        Ok(self.sink)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            if self.buf.capacity() == 0 && self.member_size != usize::MAX {
                self.buf.reserve_exact(self.member_size);
            }
            let room = self.member_size - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() >= self.member_size {
                let full = std::mem::take(&mut self.buf);
                self.submit(full)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing does not cut a member: cutting on flush would make the output depend on
        // how the caller buffers its writes.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7 + i / 1000) % 251) as u8).collect()
    }

    fn gz(input: &[u8], workers: usize, member: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), 6, member, workers).unwrap();
        // Odd write sizes so member cuts do not line up with writes.
        for c in input.chunks(7777) {
            g.write_all(c).unwrap();
        }
        g.finish().unwrap()
    }

    #[test]
    fn output_independent_of_workers_and_decodes() {
        let input = data(3 * 65536 + 123);
        let one = gz(&input, 1, 65536);
        let four = gz(&input, 4, 65536);
        assert_eq!(one, four);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&one[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn empty_input_is_one_valid_member() {
        let out = gz(&[], 2, 1 << 20);
        let mut dec = Vec::new();
        flate2::read::MultiGzDecoder::new(&out[..]).read_to_end(&mut dec).unwrap();
        assert!(dec.is_empty());
        assert_eq!(&out[..2], &[0x1f, 0x8b]);
    }
}
