//! Files with the API of `std::fs`, on the blocking pool.
//!
//! Disk I/O has no readiness to wait for: a read of a cold page blocks in the
//! kernel. So every operation here runs as a job on the
//! [blocking pool](crate::blocking) while only the calling green thread
//! parks; the hub goes on running the others. Outside a green thread the
//! calls simply block the calling OS thread, as std's do.
//!
//! ```
//! use std::io::{Read, Seek, SeekFrom, Write};
//!
//! greenhub::run(|| {
//!     let path = std::env::temp_dir().join(format!("greenhub-fs-doc-{}", std::process::id()));
//!     greenhub::fs::write(&path, "hello, hub").unwrap();
//!     assert_eq!(greenhub::fs::read_to_string(&path).unwrap(), "hello, hub");
//!
//!     let mut file = greenhub::fs::File::options().read(true).write(true).open(&path).unwrap();
//!     file.seek(SeekFrom::End(0)).unwrap();
//!     file.write_all(b"!").unwrap();
//!     file.rewind().unwrap();
//!     let mut text = String::new();
//!     file.read_to_string(&mut text).unwrap();
//!     assert_eq!(text, "hello, hub!");
//!     greenhub::fs::remove_file(&path).unwrap();
//! })
//! .unwrap();
//! ```
//!
//! # Cost
//!
//! Each call is one pool job — a few microseconds of hand-off on top of the
//! system call — so wrap a [`File`] in a `BufReader` or `BufWriter` for many
//! small reads or writes. `read_to_end`, `read_to_string`, `read_exact` and
//! [`read`] run as one job whatever the size; `write_all` as one job per MiB.
//!
//! Data moves through owned buffers: a pool thread may not borrow the green
//! thread's stack (the green thread could be killed meanwhile, and in compact
//! mode its stack bytes move while it is parked). A `read` reads into a heap
//! buffer on the pool thread and copies it into yours; a `write` copies your
//! bytes out first. A single `read` or `write` moves at most 1 MiB, as a
//! short read or write (which `Read` and `Write` allow).
//!
//! # Cancellation
//!
//! A killed or timed-out green thread unwinds at once; the operation it
//! started runs on to completion on the pool (a write still lands, the file
//! position still moves) and its result is dropped.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::{fmt, vec};

use crate::blocking::unblock;

/// The most bytes one `read` or `write` job moves.
const MAX_BUF: usize = 1 << 20;

/// Reads a whole file (one pool job), as [`std::fs::read`].
pub fn read<P: AsRef<Path>>(path: P) -> io::Result<Vec<u8>> {
    let path = path.as_ref().to_owned();
    unblock(move || std::fs::read(path))
}

/// Reads a whole file as UTF-8 (one pool job), as [`std::fs::read_to_string`].
pub fn read_to_string<P: AsRef<Path>>(path: P) -> io::Result<String> {
    let path = path.as_ref().to_owned();
    unblock(move || std::fs::read_to_string(path))
}

/// Creates or truncates a file and writes `contents` to it (one pool job;
/// `contents` is copied first), as [`std::fs::write`].
pub fn write<P: AsRef<Path>, C: AsRef<[u8]>>(path: P, contents: C) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    let contents = contents.as_ref().to_vec();
    unblock(move || std::fs::write(path, contents))
}

/// Copies a file's contents and permissions; returns the bytes copied, as
/// [`std::fs::copy`].
pub fn copy<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<u64> {
    let (from, to) = (from.as_ref().to_owned(), to.as_ref().to_owned());
    unblock(move || std::fs::copy(from, to))
}

/// Renames a file or directory, replacing `to` if it exists, as
/// [`std::fs::rename`].
pub fn rename<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<()> {
    let (from, to) = (from.as_ref().to_owned(), to.as_ref().to_owned());
    unblock(move || std::fs::rename(from, to))
}

/// A path's metadata, following symbolic links, as [`std::fs::metadata`].
pub fn metadata<P: AsRef<Path>>(path: P) -> io::Result<std::fs::Metadata> {
    let path = path.as_ref().to_owned();
    unblock(move || std::fs::metadata(path))
}

/// A path's metadata, not following a final symbolic link, as
/// [`std::fs::symlink_metadata`].
pub fn symlink_metadata<P: AsRef<Path>>(path: P) -> io::Result<std::fs::Metadata> {
    let path = path.as_ref().to_owned();
    unblock(move || std::fs::symlink_metadata(path))
}

/// The absolute path with every link resolved, as [`std::fs::canonicalize`].
pub fn canonicalize<P: AsRef<Path>>(path: P) -> io::Result<PathBuf> {
    let path = path.as_ref().to_owned();
    unblock(move || std::fs::canonicalize(path))
}

/// Removes a file, as [`std::fs::remove_file`].
pub fn remove_file<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    unblock(move || std::fs::remove_file(path))
}

/// Creates a directory, as [`std::fs::create_dir`].
pub fn create_dir<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    unblock(move || std::fs::create_dir(path))
}

/// Creates a directory and any missing parents (one pool job), as
/// [`std::fs::create_dir_all`].
pub fn create_dir_all<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    unblock(move || std::fs::create_dir_all(path))
}

/// Removes an empty directory, as [`std::fs::remove_dir`].
pub fn remove_dir<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    unblock(move || std::fs::remove_dir(path))
}

/// Removes a directory and everything in it (one pool job), as
/// [`std::fs::remove_dir_all`].
pub fn remove_dir_all<P: AsRef<Path>>(path: P) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    unblock(move || std::fs::remove_dir_all(path))
}

/// The entries of a directory, as [`std::fs::read_dir`], read in full by one
/// pool job. Calls on the entries themselves
/// ([`DirEntry::metadata`](std::fs::DirEntry::metadata), and
/// [`file_type`](std::fs::DirEntry::file_type) where the file system does not
/// report it) make a system call on the calling thread; use [`metadata`] on
/// [`path`](std::fs::DirEntry::path) instead where that matters.
pub fn read_dir<P: AsRef<Path>>(path: P) -> io::Result<ReadDir> {
    let path = path.as_ref().to_owned();
    let entries = unblock(move || std::fs::read_dir(path).map(Iterator::collect::<Vec<_>>))?;
    Ok(ReadDir(entries.into_iter()))
}

/// The entries of a directory, from [`read_dir`].
#[derive(Debug)]
pub struct ReadDir(vec::IntoIter<io::Result<std::fs::DirEntry>>);

impl Iterator for ReadDir {
    type Item = io::Result<std::fs::DirEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// An open file whose operations run on the blocking pool: the methods of
/// [`std::fs::File`], with `Read`, `Write` and `Seek` for both `File` and
/// `&File`.
///
/// Operations through one `File` from several green threads at once run on
/// several pool threads at once and share the file position, exactly as
/// with `std::fs::File` shared between OS threads.
pub struct File {
    /// Shared with the jobs in flight: a job whose green thread was killed
    /// keeps the descriptor open until it finishes.
    inner: Arc<std::fs::File>,
}

impl File {
    /// Opens a file for reading, as [`std::fs::File::open`].
    pub fn open<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new().read(true).open(path)
    }

    /// Creates a file for writing, truncating it if it exists, as
    /// [`std::fs::File::create`].
    pub fn create<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// Creates a new file for reading and writing; fails if it exists, as
    /// [`std::fs::File::create_new`].
    pub fn create_new<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }

    /// Options to open a file with, as [`std::fs::File::options`].
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// The file's metadata, as [`std::fs::File::metadata`].
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.job(|f| f.metadata())
    }

    /// Flushes data and metadata to the device, as
    /// [`std::fs::File::sync_all`].
    pub fn sync_all(&self) -> io::Result<()> {
        self.job(|f| f.sync_all())
    }

    /// Flushes data to the device, as [`std::fs::File::sync_data`].
    pub fn sync_data(&self) -> io::Result<()> {
        self.job(|f| f.sync_data())
    }

    /// Truncates or extends the file to `size` bytes, as
    /// [`std::fs::File::set_len`].
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        self.job(move |f| f.set_len(size))
    }

    /// Changes the file's permissions, as [`std::fs::File::set_permissions`].
    pub fn set_permissions(&self, perm: std::fs::Permissions) -> io::Result<()> {
        self.job(move |f| f.set_permissions(perm))
    }

    /// A new handle to the same open file (a `dup` of its descriptor, which
    /// does not block, so no pool job), as [`std::fs::File::try_clone`].
    pub fn try_clone(&self) -> io::Result<File> {
        Ok(File::from(self.inner.try_clone()?))
    }

    /// The `std` file. If an operation abandoned by a killed green thread
    /// still runs on the pool, the descriptor is duplicated instead (which
    /// fails only when the process is out of descriptors).
    pub fn into_std(self) -> io::Result<std::fs::File> {
        Arc::try_unwrap(self.inner).or_else(|shared| shared.try_clone())
    }

    /// Runs `op` on the file as one pool job.
    fn job<T, F>(&self, op: F) -> io::Result<T>
    where
        F: FnOnce(&std::fs::File) -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let file = self.inner.clone();
        unblock(move || op(&file))
    }
}

impl From<std::fs::File> for File {
    fn from(file: std::fs::File) -> File {
        File {
            inner: Arc::new(file),
        }
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("File").field(&self.inner).finish()
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for File {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for File {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.as_raw_fd()
    }
}

impl Read for &File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len().min(MAX_BUF);
        let data = self.job(move |mut f| {
            let mut data = vec![0; len];
            let n = f.read(&mut data)?;
            data.truncate(n);
            Ok(data)
        })?;
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        let data = self.job(move |mut f| {
            let mut data = vec![0; len];
            f.read_exact(&mut data)?;
            Ok(data)
        })?;
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let data = self.job(|mut f| {
            let mut data = Vec::new();
            f.read_to_end(&mut data)?;
            Ok(data)
        })?;
        let n = data.len();
        if buf.is_empty() {
            *buf = data;
        } else {
            buf.extend_from_slice(&data);
        }
        Ok(n)
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        let text = self.job(|mut f| {
            let mut text = String::new();
            f.read_to_string(&mut text)?;
            Ok(text)
        })?;
        let n = text.len();
        if buf.is_empty() {
            *buf = text;
        } else {
            buf.push_str(&text);
        }
        Ok(n)
    }
}

impl Write for &File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let data = buf[..buf.len().min(MAX_BUF)].to_vec();
        self.job(move |mut f| f.write(&data))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        for chunk in buf.chunks(MAX_BUF) {
            let data = chunk.to_vec();
            self.job(move |mut f| f.write_all(&data))?;
        }
        Ok(())
    }

    /// A no-op, as for `std::fs::File`: a `File` buffers nothing (see
    /// [`File::sync_all`] to reach the device).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for &File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.job(move |mut f| f.seek(pos))
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        (&*self).read_exact(buf)
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        (&*self).read_to_end(buf)
    }

    fn read_to_string(&mut self, buf: &mut String) -> io::Result<usize> {
        (&*self).read_to_string(buf)
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        (&*self).write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl Seek for File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        (&*self).seek(pos)
    }
}

/// How to open a file, as [`std::fs::OpenOptions`]; [`open`](OpenOptions::open)
/// runs on the blocking pool. For platform options (`mode`, `custom_flags`),
/// set them on a `std::fs::OpenOptions` and convert it with `From`.
#[derive(Clone, Debug)]
pub struct OpenOptions(std::fs::OpenOptions);

impl OpenOptions {
    /// All options off, as [`std::fs::OpenOptions::new`].
    pub fn new() -> OpenOptions {
        OpenOptions(std::fs::OpenOptions::new())
    }

    /// Read access.
    pub fn read(&mut self, read: bool) -> &mut OpenOptions {
        self.0.read(read);
        self
    }

    /// Write access.
    pub fn write(&mut self, write: bool) -> &mut OpenOptions {
        self.0.write(write);
        self
    }

    /// Append mode: every write goes to the end.
    pub fn append(&mut self, append: bool) -> &mut OpenOptions {
        self.0.append(append);
        self
    }

    /// Truncate an existing file to length 0 (needs write access).
    pub fn truncate(&mut self, truncate: bool) -> &mut OpenOptions {
        self.0.truncate(truncate);
        self
    }

    /// Create the file if it does not exist (needs write or append access).
    pub fn create(&mut self, create: bool) -> &mut OpenOptions {
        self.0.create(create);
        self
    }

    /// Create a new file, failing if it exists.
    pub fn create_new(&mut self, create_new: bool) -> &mut OpenOptions {
        self.0.create_new(create_new);
        self
    }

    /// Opens `path` with these options (one pool job), as
    /// [`std::fs::OpenOptions::open`].
    pub fn open<P: AsRef<Path>>(&self, path: P) -> io::Result<File> {
        let (options, path) = (self.0.clone(), path.as_ref().to_owned());
        unblock(move || options.open(path)).map(File::from)
    }
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions::new()
    }
}

impl From<std::fs::OpenOptions> for OpenOptions {
    fn from(options: std::fs::OpenOptions) -> OpenOptions {
        OpenOptions(options)
    }
}
