//! Deterministic image layers.
//!
//! The same files always give the same bytes: entries sorted by path,
//! modification times `SOURCE_DATE_EPOCH` (or 0), owner 0:0 without names, modes reduced to
//! 0755/0644 (by the owner's execute bit), no extended attributes, and a
//! gzip header without time or name. The tar is written straight through a
//! gzip encoder into a temporary file while both the uncompressed stream
//! (the layer's `diff_id`) and the compressed one (its digest) are hashed,
//! so a large model is read once and never held in memory.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use crate::Error;

/// A finished layer blob in a temporary file.
#[derive(Debug)]
pub struct LayerBlob {
    /// The compressed blob (to be moved into a store).
    pub file: tempfile::NamedTempFile,
    /// `sha256:` of the compressed blob.
    pub digest: String,
    /// `sha256:` of the uncompressed tar (the image config's `diff_id`).
    pub diff_id: String,
    /// Size of the compressed blob.
    pub size: u64,
    /// Total size of the files packed.
    pub content_bytes: u64,
    /// Number of files packed.
    pub files: u64,
}

/// Writes through to `inner` while hashing and counting.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Compressed = HashingWriter<BufWriter<File>>;

/// A layer being written: a tar builder over a gzip encoder over a file,
/// hashing both streams.
struct LayerSink {
    builder: tar::Builder<HashingWriter<GzEncoder<Compressed>>>,
    file: tempfile::NamedTempFile,
    content_bytes: u64,
    files: u64,
}

impl LayerSink {
    fn new(tmp_dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(tmp_dir).map_err(|e| Error::io(tmp_dir, e))?;
        let file = tempfile::NamedTempFile::new_in(tmp_dir).map_err(|e| Error::io(tmp_dir, e))?;
        let out = file.reopen().map_err(|e| Error::io(file.path(), e))?;
        let compressed = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, out),
            hasher: Sha256::new(),
            count: 0,
        };
        // `GzBuilder` writes mtime 0 and no file name unless asked: a fixed header.
        let gz: GzEncoder<_> = GzBuilder::new().write(compressed, Compression::fast());
        let tar_out = HashingWriter {
            inner: gz,
            hasher: Sha256::new(),
            count: 0,
        };
        let mut builder = tar::Builder::new(tar_out);
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        Ok(LayerSink {
            builder,
            file,
            content_bytes: 0,
            files: 0,
        })
    }

    fn finish(self, context: &Path) -> Result<LayerBlob, Error> {
        let LayerSink {
            builder,
            file,
            content_bytes,
            files,
        } = self;
        let tar_out = builder.into_inner().map_err(|e| Error::io(context, e))?;
        let diff_id = format!("sha256:{}", hex::encode(tar_out.hasher.finalize()));
        let mut compressed = tar_out.inner.finish().map_err(|e| Error::io(context, e))?;
        compressed.flush().map_err(|e| Error::io(file.path(), e))?;
        let digest = format!("sha256:{}", hex::encode(compressed.hasher.finalize()));
        let size = compressed.count;
        compressed
            .inner
            .into_inner()
            .map_err(|e| Error::io(file.path(), e.into_error()))?
            .sync_all()
            .map_err(|e| Error::io(file.path(), e))?;
        Ok(LayerBlob {
            file,
            digest,
            diff_id,
            size,
            content_bytes,
            files,
        })
    }
}

/// Packs the tree at `root` as a layer whose entries sit under `prefix`
/// (e.g. `model` so the files land in `/model`), writing the blob into a
/// temporary file in `tmp_dir`.
pub fn build_layer(root: &Path, prefix: &str, tmp_dir: &Path) -> Result<LayerBlob, Error> {
    let mut sink = LayerSink::new(tmp_dir)?;
    let builder = &mut sink.builder;
    let mut entries = Vec::new();
    collect(root, root, &mut entries)?;
    entries.sort();
    let mut content_bytes = 0u64;
    let mut files = 0u64;
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        // Every folder of the prefix has its own entry, parents first.
        let mut dir = PathBuf::new();
        for part in Path::new(prefix).components() {
            dir.push(part);
            append_dir(builder, &dir)?;
        }
    }
    for rel in &entries {
        let full = root.join(rel);
        let name = if prefix.is_empty() {
            rel.clone()
        } else {
            Path::new(prefix).join(rel)
        };
        let meta = std::fs::symlink_metadata(&full).map_err(|e| Error::io(&full, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            append_dir(builder, &name)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&full).map_err(|e| Error::io(&full, e))?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            builder
                .append_link(&mut h, &name, &target)
                .map_err(|e| Error::io(&full, e))?;
        } else if ft.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let mode = if meta.permissions().mode() & 0o100 != 0 {
                0o755
            } else {
                0o644
            };
            let mut h = header(tar::EntryType::Regular, mode, meta.len());
            let f = File::open(&full).map_err(|e| Error::io(&full, e))?;
            builder
                .append_data(&mut h, &name, f)
                .map_err(|e| Error::io(&full, e))?;
            content_bytes += meta.len();
            files += 1;
        }
        // Sockets, fifos and devices have no place in a model: skipped.
    }
    sink.content_bytes = content_bytes;
    sink.files = files;
    sink.finish(root)
}

/// What a file in a files layer holds.
#[derive(Debug, Clone)]
pub enum Contents {
    /// These bytes.
    Bytes(Vec<u8>),
    /// The bytes of this file on the host.
    File(PathBuf),
}

/// A file placed in an image by a files layer.
#[derive(Debug, Clone)]
pub struct ImageFile {
    /// Absolute path in the image, checked by [`image_path`].
    pub path: String,
    /// What it holds.
    pub contents: Contents,
    /// Permission bits (reduced to 0755 or 0644).
    pub mode: u32,
}

/// Checks that `path` names a file inside an image's root: absolute, with
/// no `.`, `..` or empty parts, and not the root itself. Returns it
/// relative to the root.
pub fn image_path(path: &str) -> Result<PathBuf, Error> {
    let bad = |why: &str| Error::ImagePath {
        path: path.to_string(),
        message: why.to_string(),
    };
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| bad("it is not absolute"))?;
    if path.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.contains(&"..") {
        return Err(bad("it escapes the image root with '..'"));
    }
    if rest.is_empty() || parts.iter().any(|p| p.is_empty() || *p == ".") {
        return Err(bad("it has an empty or '.' part, or names the root itself"));
    }
    Ok(PathBuf::from(rest))
}

/// Packs `files` as one deterministic layer (sorted, each parent folder
/// with its own entry) into a temporary file in `tmp_dir`.
pub fn build_files_layer(files: &[ImageFile], tmp_dir: &Path) -> Result<LayerBlob, Error> {
    let mut entries: std::collections::BTreeMap<PathBuf, Option<&ImageFile>> = Default::default();
    for f in files {
        let rel = image_path(&f.path)?;
        for dir in rel.ancestors().skip(1) {
            if !dir.as_os_str().is_empty() {
                entries.entry(dir.to_path_buf()).or_insert(None);
            }
        }
        if entries
            .insert(rel, Some(f))
            .is_some_and(|prev| prev.is_some())
        {
            return Err(Error::ImagePath {
                path: f.path.clone(),
                message: "it is given twice".into(),
            });
        }
    }
    let mut sink = LayerSink::new(tmp_dir)?;
    for (rel, file) in &entries {
        match file {
            None => append_dir(&mut sink.builder, rel)?,
            Some(f) => {
                let mode = if f.mode & 0o100 != 0 { 0o755 } else { 0o644 };
                let bytes = match &f.contents {
                    Contents::Bytes(b) => std::borrow::Cow::Borrowed(b.as_slice()),
                    Contents::File(p) => {
                        std::borrow::Cow::Owned(std::fs::read(p).map_err(|e| Error::io(p, e))?)
                    }
                };
                let mut h = header(tar::EntryType::Regular, mode, bytes.len() as u64);
                sink.builder
                    .append_data(&mut h, rel, bytes.as_ref())
                    .map_err(|e| Error::io(rel, e))?;
                sink.content_bytes += bytes.len() as u64;
                sink.files += 1;
            }
        }
    }
    sink.finish(tmp_dir)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(super::source_date_epoch());
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, name: &Path) -> Result<(), Error> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    builder
        .append_data(&mut h, name, io::empty())
        .map_err(|e| Error::io(name, e))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map_err(|_| Error::io(&path, io::Error::other("outside the layer root")))?;
        out.push(rel.to_path_buf());
        if entry.file_type().map_err(|e| Error::io(&path, e))?.is_dir() {
            collect(root, &path, out)?;
        }
    }
    Ok(())
}

/// Unpacks a gzip'd layer into `dest`, refusing entries that would land
/// outside it (absolute paths, `..`, links pointing out).
pub fn unpack_layer(blob: &Path, dest: &Path) -> Result<(), Error> {
    let file = File::open(blob).map_err(|e| Error::io(blob, e))?;
    let mut archive =
        tar::Archive::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file)));
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    std::fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    for entry in archive.entries().map_err(|e| Error::io(blob, e))? {
        let mut entry = entry.map_err(|e| Error::io(blob, e))?;
        let path = entry.path().map_err(|e| Error::io(blob, e))?.into_owned();
        // `unpack_in` refuses `..` and absolute paths itself and returns
        // false for them; say which entry it was.
        if !entry
            .unpack_in(dest)
            .map_err(|e| Error::io(&dest.join(&path), e))?
        {
            return Err(Error::LayerEscape {
                blob: blob.to_path_buf(),
                entry: path,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(blob: &Path) -> Vec<(String, u32, u64)> {
        let f = File::open(blob).unwrap();
        let mut a = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn files_layers_are_deterministic_with_every_parent_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let files = vec![
            ImageFile {
                path: "/opt/legion/bin/serve".into(),
                contents: Contents::Bytes(b"#!".to_vec()),
                mode: 0o700,
            },
            ImageFile {
                path: "/legion-model.json".into(),
                contents: Contents::Bytes(b"{}".to_vec()),
                mode: 0o600,
            },
        ];
        let one = build_files_layer(&files, tmp.path()).unwrap();
        let mut reversed = files.clone();
        reversed.reverse();
        let two = build_files_layer(&reversed, tmp.path()).unwrap();
        assert_eq!(one.digest, two.digest, "order of the plan does not matter");
        assert_eq!(one.diff_id, two.diff_id);
        assert_eq!(
            entries(one.file.path()),
            [
                ("legion-model.json".to_string(), 0o644, 0),
                ("opt".into(), 0o755, 0),
                ("opt/legion".into(), 0o755, 0),
                ("opt/legion/bin".into(), 0o755, 0),
                ("opt/legion/bin/serve".into(), 0o755, 0),
            ]
        );
        assert_eq!((one.files, one.content_bytes), (2, 4));
    }

    #[test]
    fn paths_outside_the_image_root_are_refused() {
        for bad in ["relative", "/", "/a/../../etc", "/a//b", "/a/./b", "/a\0b"] {
            assert!(image_path(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(image_path("/opt/x").unwrap(), PathBuf::from("opt/x"));
        let tmp = tempfile::tempdir().unwrap();
        let twice = vec![
            ImageFile {
                path: "/a".into(),
                contents: Contents::Bytes(vec![]),
                mode: 0o644,
            };
            2
        ];
        let err = build_files_layer(&twice, tmp.path()).unwrap_err();
        assert!(err.to_string().contains("given twice"), "{err}");
    }
}
