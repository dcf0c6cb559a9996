//! Copies killed with SIGKILL part-way: the destination stays as it was or
//! is complete and verifiable, and the next copy completes and takes back
//! what the killed one left. Kill points are found by polling what the copy
//! has written (bounded loops, no sleeps).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::harness::*;

/// Layers of the image the killed copies write: incompressible, so every
/// blob takes a while to compress and write.
const LAYERS: usize = 8;
const LAYER_BYTES: usize = 2 * 1024 * 1024;

/// Deterministic incompressible bytes (xorshift), different per `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A docker archive `big.tar` of LAYERS layers and a one-layer `small.tar`.
fn sources(t: &TestDir) {
    let layers: Vec<Vec<u8>> = (0..LAYERS)
        .map(|i| layer_tar(&format!("f{i}"), &noise(i as u64 + 1, LAYER_BYTES)))
        .collect();
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    legacy_archive(&t.path("big.tar"), "crash/big:1", &refs);
    legacy_archive(
        &t.path("small.tar"),
        "crash/small:1",
        &[&layer_tar("s", b"small")],
    );
}

fn spawn(t: &TestDir, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_imgsync"))
        .args(args)
        .current_dir(t.dir.path())
        .env("IMGSYNC_TMPDIR", t.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run imgsync")
}

/// Polls `reached` until it holds, then kills `child` with SIGKILL. Returns
/// whether the kill landed before the copy ended by itself.
fn kill_when(mut child: Child, mut reached: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if reached() {
            break;
        }
        assert!(Instant::now() < deadline, "the copy made no progress");
        std::thread::yield_now();
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    status.code().is_none()
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn tmp_dirs(layout: &Path) -> Vec<PathBuf> {
    names_in(layout)
        .into_iter()
        .filter(|n| n.starts_with(".imgsync-tmp-"))
        .map(|n| layout.join(n))
        .collect()
}

/// Blob files a copy into `layout` has written so far: in its temporary
/// directory or published, beyond the `before` ones.
fn blobs_written(layout: &Path, before: usize) -> usize {
    let in_tmp: usize = tmp_dirs(layout)
        .iter()
        .map(|d| {
            names_in(d)
                .iter()
                .filter(|n| n.starts_with(".blob-"))
                .count()
        })
        .sum();
    let published = names_in(&layout.join("blobs/sha256")).len();
    in_tmp + published.saturating_sub(before)
}

/// Every blob file in the layout holds the bytes its name says, and every
/// image index.json names verifies.
fn assert_layout_sound(t: &TestDir, layout: &str) {
    for name in names_in(&t.path(&format!("{layout}/blobs/sha256"))) {
        let bytes = std::fs::read(t.path(&format!("{layout}/blobs/sha256/{name}"))).unwrap();
        assert_eq!(sha256_hex(&bytes), name, "a partial blob was published");
    }
    t.imgsync(&["verify", &format!("oci:{layout}")]).ok();
}

#[test]
fn a_copy_killed_mid_way_leaves_a_layout_the_next_copy_cleans_up() {
    let t = TestDir::new();
    sources(&t);
    t.imgsync(&["copy", "docker-archive:small.tar", "oci:out:small"])
        .ok();
    let child = spawn(&t, &["copy", "docker-archive:big.tar", "oci:out:big"]);
    let out = t.path("out");
    let killed = kill_when(child, || !tmp_dirs(&out).is_empty());
    assert!(killed, "the copy ended before it could be killed");
    let stale = tmp_dirs(&out);
    assert_eq!(
        stale.len(),
        1,
        "the killed copy left no temporary directory"
    );

    t.imgsync(&["copy", "docker-archive:big.tar", "oci:out:big"])
        .ok();
    assert!(
        !stale[0].exists(),
        "the killed copy's temporary directory is still there"
    );
    assert!(tmp_dirs(&out).is_empty(), "{:?}", names_in(&out));
    let refs = layout_refs(&out);
    assert_eq!(refs.len(), 2, "{refs:?}");
    assert_layout_sound(&t, "out");
}

#[test]
fn a_live_writers_temporary_directory_is_left_alone() {
    let t = TestDir::new();
    sources(&t);
    t.imgsync(&["copy", "docker-archive:small.tar", "oci:out:small"])
        .ok();
    // This test process stands for a writer still copying into the layout:
    // it holds its directory's marker locked, as imgsync does.
    let live = t.path(&format!("out/.imgsync-tmp-{}-live", std::process::id()));
    std::fs::create_dir(&live).unwrap();
    std::fs::write(live.join(".blob-partial"), b"half a blob").unwrap();
    let marker = std::fs::File::create(live.join(".writer")).unwrap();
    marker.lock().unwrap();

    t.imgsync(&["copy", "docker-archive:big.tar", "oci:out:big"])
        .ok();
    assert_eq!(
        std::fs::read(live.join(".blob-partial")).unwrap(),
        b"half a blob",
        "a live writer's temporary file was touched"
    );
    drop(marker);
    assert_layout_sound(&t, "out");
}

#[test]
fn copies_into_a_layout_killed_after_n_blobs_leave_it_sound() {
    let t = TestDir::new();
    sources(&t);
    t.imgsync(&["copy", "docker-archive:small.tar", "oci:out:small"])
        .ok();
    let out = t.path("out");
    let index_before = std::fs::read(out.join("index.json")).unwrap();
    let blobs_before = names_in(&out.join("blobs/sha256")).len();
    let mut kills = 0;
    for n in [1, 4, LAYERS] {
        let child = spawn(&t, &["copy", "docker-archive:big.tar", "oci:out:big"]);
        kills += kill_when(child, || blobs_written(&out, blobs_before) >= n) as usize;
        let index = std::fs::read(out.join("index.json")).unwrap();
        if index != index_before {
            assert_eq!(layout_refs(&out).len(), 2, "after a kill at blob {n}");
        }
        assert_layout_sound(&t, "out");
    }
    assert!(kills > 0, "every copy ended before it could be killed");

    t.imgsync(&["copy", "docker-archive:big.tar", "oci:out:big"])
        .ok();
    assert!(tmp_dirs(&out).is_empty(), "{:?}", names_in(&out));
    assert_eq!(layout_refs(&out).len(), 2);
    assert_layout_sound(&t, "out");
}

#[test]
fn copies_into_an_archive_killed_part_way_leave_the_old_one() {
    let t = TestDir::new();
    sources(&t);
    t.imgsync(&["copy", "docker-archive:small.tar", "oci-archive:out.tar"])
        .ok();
    let before = std::fs::read(t.path("out.tar")).unwrap();
    let partials = || -> Vec<PathBuf> {
        names_in(t.dir.path())
            .into_iter()
            .filter(|n| n.starts_with(".out.tar.imgsync-"))
            .map(|n| t.path(&n))
            .collect()
    };
    let mut kills = 0;
    for n in [1, 4, LAYERS] {
        let child = spawn(
            &t,
            &["copy", "docker-archive:big.tar", "oci-archive:out.tar"],
        );
        // The archive grows as blobs go in: kill once n layers' worth is in.
        let written = || {
            partials()
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum::<u64>()
        };
        kills += kill_when(child, || written() >= (n * LAYER_BYTES) as u64) as usize;
        let now = std::fs::read(t.path("out.tar")).unwrap();
        if now != before {
            // Only a complete archive may replace the old one.
            t.imgsync(&["verify", "oci-archive:out.tar"]).ok();
        }
    }
    assert!(kills > 0, "every copy ended before it could be killed");

    t.imgsync(&["copy", "docker-archive:big.tar", "oci-archive:out.tar"])
        .ok();
    assert!(partials().is_empty(), "{:?}", t.entries());
    t.imgsync(&["verify", "oci-archive:out.tar"]).ok();
}

/// A spool file a killed run left in `--tmpdir` is removed by the next run
/// that spools there; one a running process holds (locked) is not.
#[test]
fn spool_files_of_killed_runs_are_reclaimed() {
    use std::io::Write as _;
    let t = TestDir::new();
    let spool = t.path("spool");
    std::fs::create_dir(&spool).unwrap();
    let stale = spool.join(".imgsync-spooling-stale");
    std::fs::write(&stale, b"left by a killed run").unwrap();
    let live = spool.join(".imgsync-spooling-live");
    let held = std::fs::File::create(&live).unwrap();
    held.lock().unwrap();
    let tar = std::fs::read(fixture("hello.tar")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    std::fs::write(t.path("hello.tar.gz"), gz.finish().unwrap()).unwrap();
    t.imgsync(&[
        "copy",
        "--tmpdir",
        spool.to_str().unwrap(),
        "docker-archive:hello.tar.gz:@0",
        "oci:out:x",
    ])
    .ok();
    assert!(
        !stale.exists(),
        "the killed run's spool file is still there"
    );
    assert!(live.exists(), "a live run's spool file was removed");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [".imgsync-spooling-live"], "{left:?}");
    drop(held);
}
