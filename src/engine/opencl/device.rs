//! Device selection: which OpenCL platform and device a model runs on.
//!
//! The OpenCL library is loaded at run time (the `opencl3` crate's `dynamic` feature), so a
//! binary without OpenCL installed runs fine and only says so, in one line, when a model asks
//! for `backend = "opencl"`.

use opencl3::device::{
    Device, CL_DEVICE_TYPE_ACCELERATOR, CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_CPU, CL_DEVICE_TYPE_GPU,
};
use opencl3::platform::{get_platforms, Platform};
use opencl3::types::cl_device_type;

/// `[opencl] device`: the kind of device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Accelerator,
    Gpu,
    Cpu,
    /// The first device of any kind.
    Any,
}

impl DeviceKind {
    const NAMES: [(&'static str, DeviceKind); 4] = [
        ("accelerator", DeviceKind::Accelerator),
        ("gpu", DeviceKind::Gpu),
        ("cpu", DeviceKind::Cpu),
        ("any", DeviceKind::Any),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("any", |(n, _)| n)
    }

    pub fn from_name(name: &str) -> Option<DeviceKind> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
    }

    fn cl_type(self) -> cl_device_type {
        match self {
            DeviceKind::Accelerator => CL_DEVICE_TYPE_ACCELERATOR,
            DeviceKind::Gpu => CL_DEVICE_TYPE_GPU,
            DeviceKind::Cpu => CL_DEVICE_TYPE_CPU,
            DeviceKind::Any => CL_DEVICE_TYPE_ALL,
        }
    }
}

/// The chosen device and what identifies it (for messages, placement and the binary cache).
pub struct Selected {
    pub device: Device,
    pub platform_name: String,
    pub device_name: String,
    /// Platform, device and driver versions: a program binary is valid for exactly these.
    pub identity: String,
}

/// Why no device could be chosen; each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("OpenCL is not available: the OpenCL library (libOpenCL.so) could not be loaded; install an ICD loader and a driver (e.g. ocl-icd-libopencl1 and pocl-opencl-icd)")]
    NoLibrary,
    #[error("OpenCL is not available: no OpenCL platform is installed (no ICD under /etc/OpenCL/vendors or $OCL_ICD_VENDORS)")]
    NoPlatform,
    #[error("OpenCL: no platform matches [opencl] platform = {0:?} (platforms: {1})")]
    NoMatchingPlatform(String, String),
    #[error("OpenCL: no {0} device found (platforms: {1}); set [opencl] device = \"any\" to take whatever there is")]
    NoDevice(&'static str, String),
    #[error("OpenCL: {0}")]
    Cl(String),
}

/// Picks a device: of `kind` when given, else the first accelerator, else GPU, else CPU;
/// only on platforms whose name or vendor contains `platform` (case-insensitive) when given.
pub fn select(kind: Option<DeviceKind>, platform: Option<&str>) -> Result<Selected, DeviceError> {
    let platforms = match get_platforms() {
        Ok(p) => p,
        Err(e) if e.0 == opencl3::error_codes::DLOPEN_RUNTIME_LOAD_FAILED => {
            return Err(DeviceError::NoLibrary)
        }
        Err(e) if e.0 == opencl3::error_codes::CL_PLATFORM_NOT_FOUND_KHR => {
            return Err(DeviceError::NoPlatform)
        }
        Err(e) => return Err(DeviceError::Cl(format!("listing platforms: {e}"))),
    };
    if platforms.is_empty() {
        return Err(DeviceError::NoPlatform);
    }
    let names: Vec<String> = platforms
        .iter()
        .map(|p| p.name().unwrap_or_else(|_| "?".into()))
        .collect();
    let all = names.join(", ");
    let candidates: Vec<&Platform> = match platform {
        None => platforms.iter().collect(),
        Some(want) => {
            let want = want.to_lowercase();
            let matching: Vec<&Platform> = platforms
                .iter()
                .filter(|p| {
                    let name = p.name().unwrap_or_default().to_lowercase();
                    let vendor = p.vendor().unwrap_or_default().to_lowercase();
                    name.contains(&want) || vendor.contains(&want)
                })
                .collect();
            if matching.is_empty() {
                return Err(DeviceError::NoMatchingPlatform(want, all));
            }
            matching
        }
    };
    let order: Vec<DeviceKind> = match kind {
        Some(k) => vec![k],
        None => vec![DeviceKind::Accelerator, DeviceKind::Gpu, DeviceKind::Cpu],
    };
    for k in &order {
        for p in &candidates {
            // A platform without devices of this type answers CL_DEVICE_NOT_FOUND.
            let Ok(ids) = p.get_devices(k.cl_type()) else {
                continue;
            };
            if let Some(&id) = ids.first() {
                let device = Device::new(id);
                let platform_name = p.name().unwrap_or_else(|_| "?".into());
                let device_name = device.name().unwrap_or_else(|_| "?".into());
                let identity = format!(
                    "{platform_name}|{}|{device_name}|{}|{}",
                    p.version().unwrap_or_default(),
                    device.version().unwrap_or_default(),
                    device.driver_version().unwrap_or_default()
                );
                return Ok(Selected {
                    device,
                    platform_name,
                    device_name,
                    identity,
                });
            }
        }
    }
    let wanted = match kind {
        Some(k) => k.name(),
        None => "accelerator, GPU or CPU",
    };
    Err(DeviceError::NoDevice(wanted, all))
}

/// One OpenCL device as [`list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub platform: String,
    pub name: String,
    /// `accelerator`, `gpu`, `cpu` or `other`.
    pub kind: &'static str,
}

/// Every device of every installed platform (what `backend = "opencl"` could run on), or
/// why OpenCL is not available; the studio's server page shows it.
pub fn list() -> Result<Vec<DeviceInfo>, DeviceError> {
    let platforms = match get_platforms() {
        Ok(p) => p,
        Err(e) if e.0 == opencl3::error_codes::DLOPEN_RUNTIME_LOAD_FAILED => {
            return Err(DeviceError::NoLibrary)
        }
        Err(e) if e.0 == opencl3::error_codes::CL_PLATFORM_NOT_FOUND_KHR => {
            return Err(DeviceError::NoPlatform)
        }
        Err(e) => return Err(DeviceError::Cl(format!("listing platforms: {e}"))),
    };
    if platforms.is_empty() {
        return Err(DeviceError::NoPlatform);
    }
    let mut out = Vec::new();
    for p in &platforms {
        let platform = p.name().unwrap_or_else(|_| "?".into());
        // A platform without devices answers CL_DEVICE_NOT_FOUND.
        let Ok(ids) = p.get_devices(CL_DEVICE_TYPE_ALL) else {
            continue;
        };
        for id in ids {
            let device = Device::new(id);
            let kind = match device.dev_type() {
                Ok(t) if t & CL_DEVICE_TYPE_ACCELERATOR != 0 => "accelerator",
                Ok(t) if t & CL_DEVICE_TYPE_GPU != 0 => "gpu",
                Ok(t) if t & CL_DEVICE_TYPE_CPU != 0 => "cpu",
                _ => "other",
            };
            out.push(DeviceInfo {
                platform: platform.clone(),
                name: device.name().unwrap_or_else(|_| "?".into()),
                kind,
            });
        }
    }
    Ok(out)
}
