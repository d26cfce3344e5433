//! GPU utilisation for `muster agent`, when the host has a GPU.
//!
//! NVIDIA: `libnvidia-ml.so.1` is loaded at run time with `dlopen` (no
//! build-time dependency); the reading is the highest utilisation among the
//! GPUs on which a process of the tree runs compute work, or 0 when it runs
//! on none. AMD: `/sys/class/drm/card*/device/gpu_busy_percent`, the
//! average over cards (the kernel does not attribute it to processes).
//! Anything else: no reading at all, so `gpu_usage` stays absent rather
//! than a made-up 0.

use std::ffi::{CStr, c_void};
use std::path::{Path, PathBuf};

#[repr(C)]
struct Utilization {
    gpu: u32,
    memory: u32,
}

/// `nvmlProcessInfo_t` as the `_v3` calls fill it.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProcessInfo {
    pid: u32,
    used_gpu_memory: u64,
    gpu_instance_id: u32,
    compute_instance_id: u32,
}

type Device = *mut c_void;

pub struct Nvml {
    count: unsafe extern "C" fn(*mut u32) -> i32,
    handle: unsafe extern "C" fn(u32, *mut Device) -> i32,
    utilization: unsafe extern "C" fn(Device, *mut Utilization) -> i32,
    processes: unsafe extern "C" fn(Device, *mut u32, *mut ProcessInfo) -> i32,
}

pub enum Gpu {
    Nvidia(Nvml),
    Amd(Vec<PathBuf>),
    Absent,
}

/// The symbol `name` of `lib` as a function pointer of type `T`.
///
/// # Safety
///
/// `lib` is a handle from `dlopen`, and `T` is a function pointer type
/// matching the C prototype of `name`.
unsafe fn symbol<T: Copy>(lib: *mut c_void, name: &CStr) -> Option<T> {
    const {
        assert!(
            std::mem::size_of::<T>() == std::mem::size_of::<*mut c_void>(),
            "a symbol is read as a pointer-sized function pointer"
        )
    };
    // SAFETY: the caller names a symbol whose C type is `T`, pointer-sized
    // as checked above.
    unsafe {
        let p = libc::dlsym(lib, name.as_ptr());
        (!p.is_null()).then(|| std::mem::transmute_copy(&p))
    }
}

fn load_nvml() -> Option<Nvml> {
    // SAFETY: dlopen/dlsym with constant names; the function types match
    // NVML's documented C prototypes, and nvmlInit_v2 runs before any call.
    unsafe {
        let lib = libc::dlopen(
            c"libnvidia-ml.so.1".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        );
        if lib.is_null() {
            return None;
        }
        let init: unsafe extern "C" fn() -> i32 = symbol(lib, c"nvmlInit_v2")?;
        if init() != 0 {
            return None;
        }
        Some(Nvml {
            count: symbol(lib, c"nvmlDeviceGetCount_v2")?,
            handle: symbol(lib, c"nvmlDeviceGetHandleByIndex_v2")?,
            utilization: symbol(lib, c"nvmlDeviceGetUtilizationRates")?,
            processes: symbol(lib, c"nvmlDeviceGetComputeRunningProcesses_v3")?,
        })
    }
}

/// `gpu_busy_percent` files under a sysfs `class/drm` directory.
pub fn amd_busy_files(drm: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(drm) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("card") && !n.contains('-'))
        })
        .map(|e| e.path().join("device/gpu_busy_percent"))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    files
}

/// The average of readable busy-percent files.
pub fn amd_busy(files: &[PathBuf]) -> Option<f64> {
    let vals: Vec<f64> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse().ok())
        .collect();
    (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
}

impl Gpu {
    pub fn probe() -> Gpu {
        if let Some(n) = load_nvml() {
            return Gpu::Nvidia(n);
        }
        let amd = amd_busy_files(Path::new("/sys/class/drm"));
        if amd.is_empty() {
            Gpu::Absent
        } else {
            Gpu::Amd(amd)
        }
    }

    /// Utilisation (%) for a process tree, or `None` without a GPU.
    pub fn usage(&self, pids: &[u32]) -> Option<f64> {
        match self {
            Gpu::Absent => None,
            Gpu::Amd(files) => amd_busy(files),
            Gpu::Nvidia(n) => n.usage(pids),
        }
    }
}

impl Nvml {
    fn usage(&self, pids: &[u32]) -> Option<f64> {
        // SAFETY: NVML was initialised in load_nvml; buffers are ours and
        // sized as we tell NVML.
        unsafe {
            let mut count = 0u32;
            if (self.count)(&mut count) != 0 {
                return None;
            }
            let mut best = 0.0f64;
            for i in 0..count {
                let mut dev: Device = std::ptr::null_mut();
                if (self.handle)(i, &mut dev) != 0 {
                    continue;
                }
                let mut procs = [ProcessInfo::default(); 64];
                let mut n = procs.len() as u32;
                if (self.processes)(dev, &mut n, procs.as_mut_ptr()) != 0 {
                    continue;
                }
                let ours = procs[..(n as usize).min(procs.len())]
                    .iter()
                    .any(|p| pids.contains(&p.pid));
                let mut u = Utilization { gpu: 0, memory: 0 };
                if ours && (self.utilization)(dev, &mut u) == 0 {
                    best = best.max(u.gpu as f64);
                }
            }
            Some(best)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amd_sysfs_layout() {
        let root = std::env::temp_dir().join(format!("muster-drm-{}", std::process::id()));
        for (card, busy) in [
            ("card0", Some("30\n")),
            ("card1", Some("50")),
            ("card1-DP-1", None),
            ("renderD128", None),
        ] {
            std::fs::create_dir_all(root.join(card).join("device")).unwrap();
            if let Some(b) = busy {
                std::fs::write(root.join(card).join("device/gpu_busy_percent"), b).unwrap();
            }
        }
        let files = amd_busy_files(&root);
        assert_eq!(files.len(), 2);
        assert_eq!(amd_busy(&files), Some(40.0));
        assert_eq!(amd_busy(&[]), None);
        assert!(amd_busy_files(&root.join("nothing")).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_gpu_means_no_reading() {
        assert_eq!(Gpu::Absent.usage(&[1]), None);
    }
}
