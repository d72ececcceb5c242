//! The filesystem (`wasi:filesystem`): the directories a policy's `fs` grants, read-only or
//! read-write. wasmtime-wasi (cap-std beneath) does the confining; this module wraps its
//! `wasi:filesystem/types` host so that every refusal — a `..` or symlink leading out of a
//! grant, a write, rename or link out of a read-only one — is also a `policy.denied` entry in
//! the run's journal, as HTTP and effect denials are. The tool sees the same WASI error code.
//!
//! A path outside every preopen never reaches the host: the guest's libc finds no preopen to
//! resolve it against and fails locally, so there is nothing to journal for it.

use super::{AttemptContext, ToolState, journal_denial_if_running};
use crate::failure::{Failure, FailureClass};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{FsError, FsResult};
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

/// wasmtime-wasi's filesystem host, plus the attempt its denials are journaled against.
pub struct GuardedFs<'a> {
    inner: WasiFilesystemCtxView<'a>,
    /// None while the host calls `describe` at load time.
    attempt: Option<&'a AttemptContext>,
}

struct GuardedFsData;

impl HasData for GuardedFsData {
    type Data<'a> = GuardedFs<'a>;
}

fn guarded(state: &mut ToolState) -> GuardedFs<'_> {
    GuardedFs {
        inner: WasiFilesystemCtxView {
            ctx: state.wasi.filesystem(),
            table: &mut state.table,
        },
        attempt: state.attempt.as_deref(),
    }
}

/// Error codes that mean "the sandbox refused", as opposed to "not there" or "busy".
fn is_denial(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly
    )
}

impl GuardedFs<'_> {
    /// Passes `result` through, journaling it first when it is a refusal.
    fn checked<T>(&self, result: FsResult<T>, asked: impl FnOnce() -> String) -> FsResult<T> {
        if let Err(error) = &result
            && let Some(code) = error.downcast_ref()
            && is_denial(code)
        {
            let asked = asked();
            let failure = Failure::new(
                FailureClass::Permission,
                format!("{asked}: {code} (outside the tool's fs grants or their mode)"),
            );
            journal_denial_if_running(
                self.attempt,
                &asked,
                |ctx| format!("tools.{}.fs", ctx.tool),
                &failure,
            );
        }
        result
    }
}

/// A short description of open flags for the journal: what the tool tried to do.
fn open_intent(oflags: types::OpenFlags, flags: types::DescriptorFlags) -> &'static str {
    if oflags.contains(types::OpenFlags::CREATE) {
        "create"
    } else if flags.contains(types::DescriptorFlags::WRITE)
        || oflags.contains(types::OpenFlags::TRUNCATE)
    {
        "open for writing"
    } else {
        "open"
    }
}

impl types::Host for GuardedFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.inner, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.inner, err)
    }
}

// Path-taking calls are where a grant can be escaped, so they are checked; the rest act on a
// descriptor already opened within a grant and pass straight through.
impl HostDescriptor for GuardedFs<'_> {
    async fn open_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<types::Descriptor>> {
        let asked = format!("{} {path:?}", open_intent(oflags, flags));
        let r = self
            .inner
            .open_at(fd, path_flags, path, oflags, flags)
            .await;
        self.checked(r, || asked)
    }

    async fn link_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let asked = format!("hard-link {old_path:?} to {new_path:?}");
        let r = (self.inner)
            .link_at(fd, old_path_flags, old_path, new_descriptor, new_path)
            .await;
        self.checked(r, || asked)
    }

    async fn rename_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_fd: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let asked = format!("rename {old_path:?} to {new_path:?}");
        let r = self.inner.rename_at(fd, old_path, new_fd, new_path).await;
        self.checked(r, || asked)
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let asked = format!("symlink {dest_path:?} to {src_path:?}");
        let r = self.inner.symlink_at(fd, src_path, dest_path).await;
        self.checked(r, || asked)
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let asked = format!("create directory {path:?}");
        let r = self.inner.create_directory_at(fd, path).await;
        self.checked(r, || asked)
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let asked = format!("remove directory {path:?}");
        let r = self.inner.remove_directory_at(fd, path).await;
        self.checked(r, || asked)
    }

    async fn unlink_file_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let asked = format!("unlink {path:?}");
        let r = self.inner.unlink_file_at(fd, path).await;
        self.checked(r, || asked)
    }

    async fn stat_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        let asked = format!("stat {path:?}");
        let r = self.inner.stat_at(fd, path_flags, path).await;
        self.checked(r, || asked)
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let asked = format!("set times of {path:?}");
        let r = (self.inner)
            .set_times_at(fd, path_flags, path, atim, mtim)
            .await;
        self.checked(r, || asked)
    }

    async fn readlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<String> {
        let asked = format!("read link {path:?}");
        let r = self.inner.readlink_at(fd, path).await;
        self.checked(r, || asked)
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        let asked = format!("hash metadata of {path:?}");
        let r = self.inner.metadata_hash_at(fd, path_flags, path).await;
        self.checked(r, || asked)
    }

    async fn advise(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.inner.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.inner.sync_data(fd).await
    }

    async fn get_flags(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorFlags> {
        self.inner.get_flags(fd).await
    }

    async fn get_type(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorType> {
        self.inner.get_type(fd).await
    }

    async fn set_size(
        &mut self,
        fd: Resource<types::Descriptor>,
        size: types::Filesize,
    ) -> FsResult<()> {
        self.inner.set_size(fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<types::Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.inner.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<types::Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.inner.read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<types::Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        self.inner.write(fd, buf, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        self.inner.read_directory(fd).await
    }

    async fn sync(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.inner.sync(fd).await
    }

    async fn stat(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorStat> {
        self.inner.stat(fd).await
    }

    fn drop(&mut self, fd: Resource<types::Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.inner, fd)
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.inner.read_via_stream(fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.inner.write_via_stream(fd, offset)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.inner.append_via_stream(fd)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<types::Descriptor>,
        b: Resource<types::Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.inner.is_same_object(a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.inner.metadata_hash(fd).await
    }
}

impl HostDirectoryEntryStream for GuardedFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.inner.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.inner, stream)
    }
}

pub fn add_to_linker(l: &mut Linker<ToolState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::filesystem::WasiFilesystemView as _;
    use wasmtime_wasi::p2::bindings::filesystem::preopens;
    types::add_to_linker::<ToolState, GuardedFsData>(l, guarded)?;
    preopens::add_to_linker::<ToolState, WasiFilesystem>(l, ToolState::filesystem)
}
