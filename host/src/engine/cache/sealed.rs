//! An artifact read for loading: copied by the kernel into a sealed memory file, so that the
//! bytes its MAC is checked over are the bytes the engine then maps.
//!
//! Checking a file and then mapping it by path would leave a gap in which the file could
//! change; reading it into the heap and handing that to the engine costs two user-space
//! copies of tens of megabytes (the read, then the engine's own copy into executable
//! memory). A memfd sealed against writes, growth and shrinking cannot change once checked,
//! costs one copy inside the kernel, and the engine maps it directly (through
//! `/proc/self/fd`).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use memfd::{FileSeal, MemfdOptions};

/// An artifact's bytes (without its trailing MAC) in a sealed memory file, mapped read-only.
pub(super) struct Sealed {
    memfd: memfd::Memfd,
    map: NonNull<u8>,
    len: usize,
}

impl Sealed {
    /// The artifact at `path`, whose last `tag.len()` bytes are its MAC: the MAC, and the
    /// rest sealed.
    pub(super) fn open<const TAG: usize>(path: &Path) -> io::Result<(Self, [u8; TAG])> {
        let file = File::open(path)?;
        let total = file.metadata()?.len();
        let len = total
            .checked_sub(TAG as u64)
            .filter(|&len| len > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "too short"))?;
        let mut tag = [0; TAG];
        file.read_exact_at(&mut tag, len)?;
        let memfd = MemfdOptions::new()
            .allow_sealing(true)
            .close_on_exec(true)
            .create("tollgate-artifact")
            .map_err(io::Error::other)?;
        let copied = io::copy(&mut (&file).take(len), &mut memfd.as_file())?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the artifact shrank while it was read",
            ));
        }
        memfd
            .add_seals(&[
                FileSeal::SealShrink,
                FileSeal::SealGrow,
                FileSeal::SealWrite,
                FileSeal::SealSeal,
            ])
            .map_err(io::Error::other)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let map = map_read_only(memfd.as_file(), len)?;
        Ok((Self { memfd, map, len }, tag))
    }

    /// The sealed bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `map` is a live read-only mapping of `len` bytes (unmapped only on drop),
        // of a file sealed against every change, so the bytes cannot change under the slice.
        #[expect(unsafe_code, reason = "a live mapping of a sealed file")]
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr(), self.len)
        }
    }

    /// A path that opens the sealed file itself, for as long as `self` lives.
    pub(super) fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/self/fd/{}",
            self.memfd.as_file().as_raw_fd()
        ))
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        // SAFETY: `map` and `len` are exactly what `mmap` returned and was given, and no
        // slice from `bytes` outlives `self`.
        #[expect(unsafe_code, reason = "unmapping our own mapping")]
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.len);
        }
    }
}

// SAFETY: the mapping is read-only and owned by `Sealed`; sharing `&[u8]` views of it across
// threads is as sound as sharing any immutable slice.
#[expect(unsafe_code, reason = "an immutable mapping")]
unsafe impl Send for Sealed {}
#[expect(unsafe_code, reason = "an immutable mapping")]
unsafe impl Sync for Sealed {}

fn map_read_only(file: &File, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh private read-only mapping of `len` bytes of an open file; the kernel
    // picks the address, so nothing existing is replaced. MAP_POPULATE maps every page now
    // rather than one fault at a time during the check.
    #[expect(unsafe_code, reason = "mapping a file")]
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_POPULATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}
