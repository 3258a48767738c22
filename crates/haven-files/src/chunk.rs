//! Content-defined chunking of a byte stream (FastCDC 2020, normalisation level 1).
//!
//! Chunk boundaries depend on the content around them, not on offsets, so inserting or
//! removing bytes in a file moves only the chunks around the edit; the rest keep their
//! hashes and are not sent again. Fixed blocks would shift every block after an insertion.
//! `docs/files.md` has the measurement that chose this.

use std::io;
use std::io::Read;

use fastcdc::v2020::logarithm2;
use fastcdc::v2020::MASKS;

use crate::limits::CHUNK_BYTES_AVERAGE;
use crate::limits::CHUNK_BYTES_MAX;
use crate::limits::CHUNK_BYTES_MIN;

/// Bytes read from the source at a time: many chunks per read keeps system calls and the
/// copy of a chunk's unfinished tail rare.
const WINDOW_BYTES: usize = 16 * CHUNK_BYTES_MAX as usize;

/// Splits a reader into content-defined chunks, handing each out as a borrowed slice so
/// nothing is copied per chunk.
pub struct Chunker<R> {
    reader: R,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    at_end: bool,
    masks: Masks,
}

#[derive(Clone, Copy)]
struct Masks {
    small: u64,
    large: u64,
}

impl<R: Read> Chunker<R> {
    pub fn new(reader: R) -> Chunker<R> {
        let bits = logarithm2(CHUNK_BYTES_AVERAGE) as usize;
        // Normalisation level 1: a harder mask before the average size, an easier one after.
        let masks = Masks { small: MASKS[bits + 1], large: MASKS[bits - 1] };
        Chunker { reader, buffer: vec![0; WINDOW_BYTES], start: 0, end: 0, at_end: false, masks }
    }

    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let available = self.end - self.start;
            // A cut needs a maximum chunk of look-ahead, or the end of the stream.
            if available >= CHUNK_BYTES_MAX as usize || (self.at_end && available > 0) {
                let (_, len) = fastcdc::v2020::cut(
                    &self.buffer[self.start..self.end],
                    CHUNK_BYTES_MIN as usize,
                    CHUNK_BYTES_AVERAGE as usize,
                    CHUNK_BYTES_MAX as usize,
                    self.masks.small,
                    self.masks.large,
                    self.masks.small << 1,
                    self.masks.large << 1,
                );
                let chunk = self.start..self.start + len;
                self.start += len;
                return Ok(Some(&self.buffer[chunk]));
            }
            if self.at_end {
                return Ok(None);
            }
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            while self.end < self.buffer.len() {
                match self.reader.read(&mut self.buffer[self.end..]) {
                    Ok(0) => {
                        self.at_end = true;
                        break;
                    }
                    Ok(read) => self.end += read,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
}

/// Chunk lengths of `bytes`, in order.
pub fn chunk_lengths(bytes: &[u8]) -> Vec<usize> {
    let mut chunker = Chunker::new(bytes);
    let mut lengths = Vec::new();
    // Reading from a slice cannot fail.
    while let Some(chunk) = chunker.next_chunk().expect("reading a slice") {
        lengths.push(chunk.len());
    }
    lengths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_the_input_within_the_size_bounds() {
        for len in [0, 1, 100, CHUNK_BYTES_MIN as usize, 3 * WINDOW_BYTES + 12_345] {
            let data = pseudo_random(len, 7);
            let lengths = chunk_lengths(&data);
            assert_eq!(lengths.iter().sum::<usize>(), len);
            let (last, rest) = lengths.split_last().map_or((None, &[][..]), |(last, rest)| (Some(last), rest));
            assert!(rest.iter().all(|&l| (CHUNK_BYTES_MIN as usize..=CHUNK_BYTES_MAX as usize).contains(&l)));
            assert!(last.is_none_or(|&l| l > 0 && l <= CHUNK_BYTES_MAX as usize));
        }
    }

    #[test]
    fn boundaries_do_not_depend_on_how_the_reader_delivers_bytes() {
        // A reader that returns a few bytes at a time must cut exactly where a slice does.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(4093);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = pseudo_random(5 * WINDOW_BYTES + 999, 11);
        let mut chunker = Chunker::new(Trickle(&data));
        let mut trickled = Vec::new();
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            trickled.push(chunk.len());
        }
        assert_eq!(trickled, chunk_lengths(&data));
    }

    #[test]
    fn an_insertion_changes_only_the_chunks_around_it() {
        let data = pseudo_random(8 * 1024 * 1024, 3);
        let mut edited = data.clone();
        edited.splice(4_000_000..4_000_000, [1u8, 2, 3, 4, 5]);
        let hashes = |bytes: &[u8]| -> std::collections::HashSet<crate::hash::Hash> {
            let mut offset = 0;
            chunk_lengths(bytes)
                .into_iter()
                .map(|len| {
                    let hash = crate::hash::Hash::of(&bytes[offset..offset + len]);
                    offset += len;
                    hash
                })
                .collect()
        };
        let before = hashes(&data);
        let after = hashes(&edited);
        let new = after.difference(&before).count();
        assert!(new <= 2, "{new} chunks changed after a 5-byte insertion");
    }
}
