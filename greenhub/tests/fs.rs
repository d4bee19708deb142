//! Files on the blocking pool: the `std::fs` API from green threads, with
//! std's errors, and many green threads doing file I/O at once.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use greenhub::fs::{self, File, OpenOptions};
use greenhub::{run, spawn, with_timeout};

const BOUND: Duration = Duration::from_secs(10);

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("greenhub-fs-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn whole_file_round_trip() {
    let dir = TempDir::new("round-trip");
    let path = dir.path("a.txt");
    run(move || {
        fs::write(&path, "hello, hub").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello, hub");
        assert_eq!(fs::read_to_string(&path).unwrap(), "hello, hub");
        let meta = fs::metadata(&path).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.len(), 10);
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(
            fs::canonicalize(&path).unwrap(),
            std::fs::canonicalize(&path).unwrap()
        );

        let copy = path.with_extension("copy");
        assert_eq!(fs::copy(&path, &copy).unwrap(), 10);
        let moved = path.with_extension("moved");
        fs::rename(&copy, &moved).unwrap();
        assert_eq!(fs::read(&moved).unwrap(), b"hello, hub");

        fs::remove_file(&path).unwrap();
        fs::remove_file(&moved).unwrap();
        assert_eq!(fs::read(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
    })
    .unwrap();
}

#[test]
fn file_read_write_seek() {
    let dir = TempDir::new("rws");
    let path = dir.path("f.bin");
    run(move || {
        let mut f = File::create(&path).unwrap();
        f.write_all(b"0123456789").unwrap();
        assert_eq!(f.write(b"abc").unwrap(), 3);
        f.flush().unwrap();
        f.sync_all().unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.metadata().unwrap().len(), 13);
        drop(f);

        let mut f = File::options().read(true).write(true).open(&path).unwrap();
        let mut buf = [0u8; 4];
        f.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"0123");
        assert_eq!(f.seek(SeekFrom::Current(2)).unwrap(), 6);
        assert_eq!(f.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"6789");
        assert_eq!(f.stream_position().unwrap(), 10);
        f.seek(SeekFrom::Start(2)).unwrap();
        f.write_all(b"XY").unwrap();
        f.rewind().unwrap();
        let mut all = Vec::new();
        assert_eq!(f.read_to_end(&mut all).unwrap(), 13);
        assert_eq!(all, b"01XY456789abc");
        // At the end: reads give 0, read_exact gives UnexpectedEof.
        assert_eq!(f.read(&mut buf).unwrap(), 0);
        assert_eq!(
            f.read_exact(&mut buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );

        // `&File` reads, writes and seeks too; appending to a non-empty buffer.
        let mut r = &f;
        r.seek(SeekFrom::Start(10)).unwrap();
        let mut text = String::from(">");
        assert_eq!(r.read_to_string(&mut text).unwrap(), 3);
        assert_eq!(text, ">abc");
        (&f).write_all(b"!").unwrap();

        f.set_len(4).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4);
        let clone = f.try_clone().unwrap();
        assert_eq!(clone.metadata().unwrap().len(), 4);
        let std_file = f.into_std().unwrap();
        assert_eq!(std_file.metadata().unwrap().len(), 4);
        assert_eq!(fs::read(&path).unwrap(), b"01XY");
    })
    .unwrap();
}

#[test]
fn open_options() {
    let dir = TempDir::new("options");
    let path = dir.path("log");
    run(move || {
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        f.write_all(b"one\n").unwrap();
        drop(f);
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(b"two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");

        assert_eq!(
            File::create_new(&path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let mut std_options = std::fs::OpenOptions::new();
        std_options.write(true).truncate(true);
        OpenOptions::from(std_options).open(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    })
    .unwrap();
}

#[test]
fn missing_files_are_not_found() {
    let dir = TempDir::new("missing");
    let path = dir.path("nope");
    run(move || {
        let kind = |r: io::Error| r.kind();
        assert_eq!(
            kind(File::open(&path).unwrap_err()),
            io::ErrorKind::NotFound
        );
        assert_eq!(kind(fs::read(&path).unwrap_err()), io::ErrorKind::NotFound);
        assert_eq!(
            kind(fs::read_to_string(&path).unwrap_err()),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(fs::metadata(&path).unwrap_err()),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(fs::remove_file(&path).unwrap_err()),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(fs::write(path.join("sub"), b"x").unwrap_err()),
            io::ErrorKind::NotFound
        );
    })
    .unwrap();
}

#[test]
fn directories() {
    let dir = TempDir::new("dirs");
    let root = dir.path("a");
    run(move || {
        let deep = root.join("b").join("c");
        fs::create_dir_all(&deep).unwrap();
        fs::create_dir_all(&deep).unwrap(); // already there: fine
        fs::create_dir(root.join("d")).unwrap();
        fs::write(deep.join("f"), b"x").unwrap();
        let mut names: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["b", "d"]);
        fs::remove_dir(root.join("d")).unwrap();
        assert!(fs::remove_dir(root.join("b")).is_err(), "not empty");
        fs::remove_dir_all(&root).unwrap();
        assert!(!exists(&root));
    })
    .unwrap();
}

fn exists(path: &Path) -> bool {
    fs::metadata(path).is_ok()
}

#[test]
fn large_reads_and_writes() {
    let dir = TempDir::new("large");
    let path = dir.path("big");
    run(move || {
        let data = bytes(7, 3 * 1024 * 1024 + 17);
        let mut f = File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        drop(f);
        assert_eq!(fs::read(&path).unwrap(), data);

        // A single read may be short; a loop of them sees every byte.
        let mut f = File::open(&path).unwrap();
        let mut buf = vec![0u8; data.len()];
        let mut got = 0;
        while got < buf.len() {
            let n = f.read(&mut buf[got..]).unwrap();
            assert!(n > 0);
            got += n;
        }
        assert_eq!(buf, data);
        f.rewind().unwrap();
        let mut exact = vec![0u8; data.len()];
        f.read_exact(&mut exact).unwrap();
        assert_eq!(exact, data);
    })
    .unwrap();
}

#[test]
fn many_green_threads_read_files_at_once() {
    let dir = TempDir::new("many");
    let paths: Vec<PathBuf> = (0..50).map(|i| dir.path(&format!("f{i}"))).collect();
    for (i, p) in paths.iter().enumerate() {
        std::fs::write(p, bytes(i as u64, 64 * 1024 + i)).unwrap();
    }
    run(move || {
        let handles: Vec<_> = paths
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                spawn(move || {
                    let mut f = File::open(&p).unwrap();
                    let mut data = Vec::new();
                    f.read_to_end(&mut data).unwrap();
                    assert_eq!(data, bytes(i as u64, 64 * 1024 + i), "file {i}");
                    assert_eq!(fs::read(&p).unwrap(), data);
                })
            })
            .collect();
        for h in handles {
            with_timeout(BOUND, || h.join()).unwrap().unwrap();
        }
    })
    .unwrap();
}

#[test]
fn outside_a_hub_it_works_as_std() {
    let dir = TempDir::new("plain");
    let path = dir.path("p");
    fs::write(&path, b"plain").unwrap();
    let mut f = File::open(&path).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "plain");
}
