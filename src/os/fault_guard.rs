//! Faults on a shared map that the kernel cannot serve become an error,
//! not a `SIGBUS` that kills the process: stores walq makes into a map,
//! and reads walq makes of records in one.
//!
//! A store into a page of a shared file map that is not writable in the
//! page table (never touched, or cleaned by writeback since: `fdatasync`,
//! the kernel's flusher, someone's `sync`) faults, and the file system's
//! `page_mkwrite` decides. It fails, and the kernel raises `SIGBUS`, when
//! the file system has shut down (xfs after a metadata or log I/O error,
//! or `xfs_io -x -c shutdown`: measured on the reference VM, the next
//! enqueue of a `Durability::Os` queue killed the process) or when the page
//! lies past the end of a file someone cut short. A read of a page that is
//! not in the page table faults the same way when the kernel cannot read
//! it: past the end of a cut file, or an I/O error from the device. Reads
//! are checked first (`Region::populate_read`), but a check says nothing of
//! a cut or an eviction after it.
//!
//! [`copy`] and [`ReadWindow`] make such a fault an error instead. They mark the
//! range they touch as this thread's *window*; a process-wide `SIGBUS`
//! handler (installed once, the first time walq maps a file) checks the
//! faulting address against the window of the faulting thread. Inside it,
//! the handler puts a private anonymous copy of the page (its current
//! bytes where the kernel can still read them, zeros otherwise) in place
//! of the file's page with one `mremap`, notes the fault, and returns: the
//! access runs again on the copy and completes. The caller then learns of
//! the fault: a store is a failed write (the log poisons the queue: the
//! map no longer shows the file, and nothing more may be appended to it or
//! read from it by this queue); a read is an unreadable record, and the
//! region refuses every later write (`ReadGuard::close`), since a store
//! into the private page would reach no file. Outside a window the handler
//! passes the signal on to the handler that was installed before (Rust's
//! own, which tells a stack overflow apart), or restores the default
//! action, so every other `SIGBUS` kills the process as it did before.
//!
//! # Safety argument
//!
//! * **The handler is async-signal-safe.** It reads a thread-local of its
//!   own thread (const-initialised, no destructor: a plain TLS access) and
//!   two [`OnceLock`]s set before the handler was installed, and makes
//!   system calls (`mmap`, `process_vm_readv`, `mremap`, `munmap`,
//!   `sigaction`, `raise`), with `errno` saved and put back. It allocates
//!   nothing, takes no lock and never unwinds. A signal someone sent (`si_code` <= 0) is passed on before
//!   any of it.
//! * **The page swap changes no byte a reader can see.** The copy holds
//!   the page's current bytes, read by the kernel (`process_vm_readv`,
//!   which reports an unreadable page as EFAULT instead of faulting), and
//!   `mremap` puts it in place atomically; readers read only published
//!   bytes, which no store changes (`Region` rule 1). Only where the kernel
//!   cannot read the page either (EFAULT) is the copy zeros: its bytes
//!   were already lost to every reader, each of whom would fault. Any
//!   other failure to read it (the call refused by a seccomp filter)
//!   replaces nothing, and the fault kills as before.
//! * **Only walq's own accesses are diverted, and each page once in a
//!   row.** The window is set and cleared by the thread that accesses the
//!   map, around the access, with compiler fences so that it does not move
//!   out of the window, and cleared on unwinding too; a fault elsewhere,
//!   or on another thread, is passed on. A [`ReadWindow`] covers only a
//!   range of one of walq's shared maps (its opener's contract), and
//!   nothing else that could fault is read while it is open. A page
//!   that faults again right after its replacement is passed on too, so an
//!   access never loops.
//! * **A read that faulted sees zeros, never another file's bytes.** The
//!   page was unreadable to every reader (each would fault), and the
//!   private page holds zeros, or the bytes the kernel could read after
//!   all. Slices of it that other threads hold read the same; the zeros
//!   fail the record's checksum, so no reader serves them.
//! * **What stays outside:** a program that installs its own `SIGBUS`
//!   handler after walq replaces this one (its handler then sees walq's
//!   faults, as before this module); a read of a map outside a
//!   [`ReadWindow`] (the copy of a payload out of the map after its record
//!   was checked in one: the microseconds between the two, see
//!   docs/architecture.md). Passing
//!   on calls the previous handler directly, without its signal mask;
//!   Rust's own handler resets `SIGBUS` to the default action when the
//!   fault is not a stack overflow, so after a `SIGBUS` someone sent (the
//!   process survives it, as without walq) walq's handler is gone for the
//!   rest of the process. Where walq is in a library loaded with `dlopen`,
//!   the first TLS access of a thread that never used a window may allocate
//!   (glibc's `__tls_get_addr`): the handler touches its thread-local only
//!   for a fault, which kills the process unless it is walq's.

use std::sync::atomic::{compiler_fence, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

/// This thread's access in progress (a store or a read), read by the
/// handler.
struct Window {
    /// The range's start.
    start: AtomicUsize,
    /// The range's end (exclusive); 0 when no access is in progress.
    end: AtomicUsize,
    /// The page the handler last replaced in this access; 0 if none.
    replaced: AtomicUsize,
}

thread_local! {
    static WINDOW: Window = const {
        Window {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            replaced: AtomicUsize::new(0),
        }
    };
}

/// The `SIGBUS` action found when the handler was installed.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// The system's page size, read once at installation.
static PAGE: OnceLock<usize> = OnceLock::new();

/// Installs the handler, once per process; later calls do nothing.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sysconf` takes and returns plain integers.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let _ = PAGE.set(
            usize::try_from(page)
                .ok()
                .filter(|&p| p > 0)
                .unwrap_or(4096),
        );
        // SAFETY: `sigaction` reads the action we pass (valid plain data)
        // and writes the old one into the struct we pass. The previous
        // action is stored before ours is installed, so the handler always
        // finds it.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return;
            }
            let _ = PREVIOUS.set(old);
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut());
        }
    });
}

/// Copies `len` bytes from `src` to `dst`, where `dst` lies in a shared
/// map; `Err` if the kernel refused a store (the page was then replaced
/// by a private copy, see the module docs, so the map no longer shows the
/// file there).
///
/// # Safety
///
/// As for `std::ptr::copy_nonoverlapping`: `src` valid for `len` reads,
/// `dst` for `len` writes, not overlapping.
#[inline(always)]
pub(crate) unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) -> Result<(), ()> {
    let window = Open::new(dst as usize, len);
    std::ptr::copy_nonoverlapping(src, dst, len);
    if window.close() {
        Err(())
    } else {
        Ok(())
    }
}

/// A read window: while it is open, a fault of this thread in its range
/// is diverted (the page replaced, see the module docs) and noted;
/// [`ReadWindow::close`] says whether one was. Opened and closed by one
/// thread (it is neither `Send` nor `Sync`); windows do not nest.
pub(crate) struct ReadWindow(Open);

impl ReadWindow {
    /// Opens a window over `start..start+len`.
    ///
    /// # Safety
    ///
    /// `start..start+len` lies in a shared file map of walq's (a
    /// `Region`'s), whose pages may be replaced, and nothing else that
    /// could raise `SIGBUS` is read while the window is open.
    #[inline(always)]
    pub(crate) unsafe fn open(start: *const u8, len: usize) -> ReadWindow {
        ReadWindow(Open::new(start as usize, len))
    }

    /// Closes the window; whether a page of it faulted while it was open
    /// (its reads then saw bytes that are not the file's there, and the
    /// map no longer shows the file).
    #[inline(always)]
    pub(crate) fn close(self) -> bool {
        self.0.close()
    }
}

/// This thread's window, open: closed by [`Open::close`], or when dropped
/// (on unwinding too: a window left open would divert a later fault of
/// this thread that no caller learns of).
struct Open {
    window: &'static Window,
    /// Not `Send`: the window is this thread's.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Open {
    #[inline(always)]
    fn new(start: usize, len: usize) -> Open {
        let w = window();
        debug_assert_eq!(w.end.load(Ordering::Relaxed), 0, "windows do not nest");
        w.replaced.store(0, Ordering::Relaxed);
        w.start.store(start, Ordering::Relaxed);
        w.end.store(start.saturating_add(len), Ordering::Relaxed);
        // No access of the window's range moves above this.
        compiler_fence(Ordering::SeqCst);
        Open {
            window: w,
            _thread: std::marker::PhantomData,
        }
    }

    /// Whether a page was replaced while the window was open.
    #[inline(always)]
    fn close(self) -> bool {
        let w = self.window;
        drop(self);
        w.replaced.load(Ordering::Relaxed) != 0
    }
}

impl Drop for Open {
    #[inline(always)]
    fn drop(&mut self) {
        // No access of the window's range moves below this.
        compiler_fence(Ordering::SeqCst);
        self.window.end.store(0, Ordering::Relaxed);
    }
}

/// This thread's window: one TLS lookup, then plain field accesses (a
/// closure per access cost a call each on the append path).
#[inline(always)]
fn window() -> &'static Window {
    // SAFETY: the pointer is to this thread's `WINDOW`, which has no
    // destructor and lives as long as the thread; the reference is used
    // only by this thread, within the call that took it (`copy`, the
    // handler), and every access is atomic.
    unsafe { &*WINDOW.with(|w| w as *const Window) }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an SA_SIGINFO
    // handler; for a fault (`si_code` > 0) `si_addr` is its address.
    // `errno` is this thread's; the handler's system calls must not
    // change it under the code they interrupted.
    let (code, addr, errno) = unsafe {
        let errno = *libc::__errno_location();
        ((*info).si_code, (*info).si_addr() as usize, errno)
    };
    // Sent by someone (`kill`, `sigqueue`: `si_code` <= 0) is no fault.
    if !(code > 0 && divert(addr)) {
        // SAFETY: forwards the kernel's own arguments.
        unsafe { pass_on(sig, info, ctx) }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Whether a fault at `addr` lay in this thread's window and its page was
/// replaced, so the access can finish. A page that faults again right
/// after its replacement is not replaced again (the access would never
/// finish): the fault is passed on.
fn divert(addr: usize) -> bool {
    let w = window();
    let (start, end) = (
        w.start.load(Ordering::Relaxed),
        w.end.load(Ordering::Relaxed),
    );
    if addr < start || addr >= end {
        return false;
    }
    let page = addr & !(PAGE.get().copied().unwrap_or(4096) - 1);
    if w.replaced.load(Ordering::Relaxed) == page || !replace_page(page) {
        return false;
    }
    w.replaced.store(page, Ordering::Relaxed);
    true
}

/// Puts a private copy of the page at `start` in its place; whether that
/// worked. The copy holds the page's bytes, read by the kernel for us
/// (`process_vm_readv`), or zeros where the kernel cannot read them
/// either (EFAULT: the page is gone, past the end of a cut file). Any
/// other failure (the call refused by a seccomp filter, say) replaces
/// nothing, and the fault is passed on.
fn replace_page(start: usize) -> bool {
    let page = PAGE.get().copied().unwrap_or(4096);
    // SAFETY: a fresh anonymous mapping of our own; the kernel reads the
    // page at `start` for us and reports an unreadable one as an error
    // (no fault); `mremap` moves our fresh page over `start`, which lies
    // in a shared map of walq's (the window), replacing that page only.
    unsafe {
        let tmp = libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if tmp == libc::MAP_FAILED {
            return false;
        }
        let local = libc::iovec {
            iov_base: tmp,
            iov_len: page,
        };
        let remote = libc::iovec {
            iov_base: start as *mut libc::c_void,
            iov_len: page,
        };
        let read = libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0);
        let unreadable = read < 0 && *libc::__errno_location() == libc::EFAULT;
        if read != page as isize && !unreadable {
            libc::munmap(tmp, page);
            return false;
        }
        let moved = libc::mremap(
            tmp,
            page,
            page,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            start as *mut libc::c_void,
        );
        if moved == libc::MAP_FAILED {
            libc::munmap(tmp, page);
            return false;
        }
    }
    true
}

/// Gives a `SIGBUS` that is not walq's to the previous handler, or to the
/// default action.
///
/// # Safety
///
/// Called from the handler with the kernel's arguments.
unsafe fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if let Some(prev) = PREVIOUS.get() {
        let handler = prev.sa_sigaction;
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(handler);
                f(sig, info, ctx);
            } else {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
                f(sig);
            }
            return;
        }
    }
    // Ignored: a signal someone sent stays ignored; a fault happens again
    // when the handler returns, and the kernel kills (as without walq).
    // The default action: the same, and a signal someone sent is raised
    // again.
    if PREVIOUS
        .get()
        .is_some_and(|p| p.sa_sigaction == libc::SIG_IGN)
        && (*info).si_code <= 0
    {
        return;
    }
    let mut dfl: libc::sigaction = std::mem::zeroed();
    dfl.sa_sigaction = libc::SIG_DFL;
    libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
    if (*info).si_code <= 0 {
        libc::raise(sig);
    }
}
