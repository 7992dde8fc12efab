//! Compression and checksums: gzip (flate2, pure Rust) of the snapshot, and
//! the SHA-256 of the bytes as stored (the compressed ones), so that a copy
//! can be checked before it is even decompressed.
//!
//! These are blocking file operations; the async callers run them on
//! `spawn_blocking`.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

/// Size and checksum of a stored (compressed) file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// Bytes written.
    pub size: u64,
    /// SHA-256 of those bytes, lower-case hex.
    pub sha256: String,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses `raw` into a new file `out` (gzip, default level) and returns
/// the size and SHA-256 of what was written. `out` is synced to disk.
pub fn compress(raw: &Path, out: &Path) -> io::Result<Packed> {
    let mut input = BufReader::with_capacity(256 * 1024, File::open(raw)?);
    let file = File::create(out)?;
    let hashing = Hashing {
        inner: BufWriter::with_capacity(256 * 1024, file),
        hasher: Sha256::new(),
        size: 0,
    };
    let mut encoder = GzEncoder::new(hashing, Compression::default());
    io::copy(&mut input, &mut encoder)?;
    let mut hashing = encoder.finish()?;
    hashing.flush()?;
    let Hashing { inner, hasher, size } = hashing;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(Packed {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Size and SHA-256 of the file at `path`.
pub fn checksum(path: &Path) -> io::Result<Packed> {
    let mut file = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Packed {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Decompresses the gzip file `packed` into a new file `out`, synced to disk.
pub fn decompress(packed: &Path, out: &Path) -> io::Result<u64> {
    let mut decoder = GzDecoder::new(BufReader::with_capacity(256 * 1024, File::open(packed)?));
    let file = File::create(out)?;
    let mut writer = BufWriter::with_capacity(256 * 1024, file);
    let n = io::copy(&mut decoder, &mut writer)?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_checksum() {
        let dir = std::env::temp_dir().join(format!("worker-pack-test-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("raw");
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        std::fs::write(&raw, &data).unwrap();
        let packed = compress(&raw, &dir.join("p.gz")).unwrap();
        assert_eq!(checksum(&dir.join("p.gz")).unwrap(), packed);
        assert_eq!(packed.size, std::fs::metadata(dir.join("p.gz")).unwrap().len());
        assert_eq!(
            decompress(&dir.join("p.gz"), &dir.join("out")).unwrap(),
            data.len() as u64
        );
        assert_eq!(std::fs::read(dir.join("out")).unwrap(), data);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
