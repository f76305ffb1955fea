//! Running a [`CudaBuild`] on a GPU through the CUDA driver API.
//!
//! `libcuda.so.1` is opened at run time with `libloading`, so varc builds,
//! tests and runs everywhere; [`Device::open`] returns an error (never
//! panics) when the library, the driver or a device is missing. The module
//! is JIT-compiled from the PTX by the driver (`cuModuleLoadDataEx`, with
//! the JIT's error log reported on failure).
//!
//! `unsafe` appears only at this FFI boundary; each block says why it is
//! sound.

use crate::plan::BufferKind;
use crate::{CudaBuild, CudaError, decode_status, status_message};
use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use varc_ir::Tensor;
use varc_ir::tensor::TensorData;

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type CuModule = *mut c_void;
type CuFunction = *mut c_void;
type CuDevicePtr = u64;

const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;
const CU_JIT_INFO_LOG_BUFFER: c_int = 3;
const CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES: c_int = 4;
const CU_JIT_ERROR_LOG_BUFFER: c_int = 5;
const CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES: c_int = 6;
const JIT_LOG_BYTES: usize = 16 * 1024;

/// The driver entry points varc uses (the `_v2` ABI where one exists).
struct Api {
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    device_get_attribute: unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult,
    ctx_create: unsafe extern "C" fn(*mut CuContext, c_uint, CuDevice) -> CuResult,
    ctx_destroy: unsafe extern "C" fn(CuContext) -> CuResult,
    ctx_set_current: unsafe extern "C" fn(CuContext) -> CuResult,
    ctx_synchronize: unsafe extern "C" fn() -> CuResult,
    module_load_data_ex: unsafe extern "C" fn(
        *mut CuModule,
        *const c_void,
        c_uint,
        *mut c_int,
        *mut *mut c_void,
    ) -> CuResult,
    module_get_function: unsafe extern "C" fn(*mut CuFunction, CuModule, *const c_char) -> CuResult,
    module_unload: unsafe extern "C" fn(CuModule) -> CuResult,
    mem_alloc: unsafe extern "C" fn(*mut CuDevicePtr, usize) -> CuResult,
    mem_free: unsafe extern "C" fn(CuDevicePtr) -> CuResult,
    memcpy_htod: unsafe extern "C" fn(CuDevicePtr, *const c_void, usize) -> CuResult,
    memcpy_dtoh: unsafe extern "C" fn(*mut c_void, CuDevicePtr, usize) -> CuResult,
    memset_d8: unsafe extern "C" fn(CuDevicePtr, u8, usize) -> CuResult,
    #[allow(clippy::type_complexity)]
    launch_kernel: unsafe extern "C" fn(
        CuFunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        *mut c_void,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
    get_error_string: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    /// Keeps the function pointers above valid.
    _lib: libloading::Library,
}

/// The places the driver library is looked for, in order.
const LIBRARY_NAMES: [&str; 2] = ["libcuda.so.1", "libcuda.so"];

impl Api {
    fn load() -> Result<Api, String> {
        let mut why = Vec::new();
        for name in LIBRARY_NAMES {
            // SAFETY: loading libcuda runs its initialisers, which have no
            // preconditions on our side; nothing else in the process is
            // touched, and a failure is returned as an error.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => return Api::bind(lib),
                Err(e) => why.push(format!("{name}: {e}")),
            }
        }
        Err(format!(
            "the CUDA driver library is not loadable ({})",
            why.join("; ")
        ))
    }

    fn bind(lib: libloading::Library) -> Result<Api, String> {
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: each symbol is looked up under its documented
                // CUDA driver API name and given the C signature that API
                // declares for it (cuda.h, CUDA 12); the pointer stays valid
                // while `_lib` is alive, and `Api` owns `_lib`.
                let s = unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| format!("libcuda has no {}: {e}", $name))?;
                *s
            }};
        }
        Ok(Api {
            init: sym!("cuInit"),
            device_get_count: sym!("cuDeviceGetCount"),
            device_get: sym!("cuDeviceGet"),
            device_get_attribute: sym!("cuDeviceGetAttribute"),
            device_get_name: sym!("cuDeviceGetName"),
            ctx_create: sym!("cuCtxCreate_v2"),
            ctx_destroy: sym!("cuCtxDestroy_v2"),
            ctx_set_current: sym!("cuCtxSetCurrent"),
            ctx_synchronize: sym!("cuCtxSynchronize"),
            module_load_data_ex: sym!("cuModuleLoadDataEx"),
            module_get_function: sym!("cuModuleGetFunction"),
            module_unload: sym!("cuModuleUnload"),
            mem_alloc: sym!("cuMemAlloc_v2"),
            mem_free: sym!("cuMemFree_v2"),
            memcpy_htod: sym!("cuMemcpyHtoD_v2"),
            memcpy_dtoh: sym!("cuMemcpyDtoH_v2"),
            memset_d8: sym!("cuMemsetD8_v2"),
            launch_kernel: sym!("cuLaunchKernel"),
            get_error_string: sym!("cuGetErrorString"),
            _lib: lib,
        })
    }

    /// `Ok(())` for CUDA_SUCCESS, else the driver's message for `r`.
    fn check(&self, r: CuResult, what: &str) -> Result<(), String> {
        if r == 0 {
            return Ok(());
        }
        let mut msg: *const c_char = std::ptr::null();
        // SAFETY: cuGetErrorString writes a pointer to a static,
        // NUL-terminated string (or leaves null for unknown codes); it is
        // only read here, through CStr, when non-null.
        let text = unsafe {
            if (self.get_error_string)(r, &mut msg) == 0 && !msg.is_null() {
                std::ffi::CStr::from_ptr(msg).to_string_lossy().into_owned()
            } else {
                "unknown error".to_string()
            }
        };
        Err(format!("{what}: CUDA error {r} ({text})"))
    }
}

/// A CUDA device with a context of its own.
pub struct Device {
    api: Api,
    ctx: CuContext,
    /// e.g. "NVIDIA H200 (sm_90)".
    pub name: String,
    /// Compute capability as major·10 + minor.
    pub sm: u32,
}

impl Device {
    /// Opens device 0. The error says why there is none: no driver
    /// library, a driver that does not initialise, or no device.
    pub fn open() -> Result<Device, String> {
        let api = Api::load()?;
        let mut count: c_int = 0;
        let mut dev: CuDevice = 0;
        let (mut major, mut minor): (c_int, c_int) = (0, 0);
        let mut name = [0 as c_char; 128];
        let mut ctx: CuContext = std::ptr::null_mut();
        // SAFETY: plain driver calls in their documented order (cuInit
        // first); every out-pointer is a live local of the declared type,
        // and the name buffer's length is passed with it.
        unsafe {
            api.check((api.init)(0), "cuInit")?;
            api.check((api.device_get_count)(&mut count), "cuDeviceGetCount")?;
            if count == 0 {
                return Err("the CUDA driver reports no device".into());
            }
            api.check((api.device_get)(&mut dev, 0), "cuDeviceGet")?;
            api.check(
                (api.device_get_attribute)(
                    &mut major,
                    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    dev,
                ),
                "cuDeviceGetAttribute",
            )?;
            api.check(
                (api.device_get_attribute)(
                    &mut minor,
                    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    dev,
                ),
                "cuDeviceGetAttribute",
            )?;
            api.check(
                (api.device_get_name)(name.as_mut_ptr(), name.len() as c_int - 1, dev),
                "cuDeviceGetName",
            )?;
            api.check((api.ctx_create)(&mut ctx, 0, dev), "cuCtxCreate")?;
        }
        let sm = (major * 10 + minor) as u32;
        // SAFETY: cuDeviceGetName wrote a NUL-terminated string into at
        // most len-1 bytes of `name`, whose last byte is still 0.
        let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(Device {
            api,
            ctx,
            name: format!("{name} (sm_{sm})"),
            sm,
        })
    }

    fn make_current(&self) -> Result<(), CudaError> {
        // SAFETY: `ctx` is this device's live context (destroyed only in
        // Drop); making it current on the calling thread has no other
        // precondition.
        let r = unsafe { (self.api.ctx_set_current)(self.ctx) };
        self.api
            .check(r, "cuCtxSetCurrent")
            .map_err(CudaError::Driver)
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer<'_>, CudaError> {
        let mut ptr: CuDevicePtr = 0;
        // SAFETY: allocates in the current context (set by every caller);
        // `ptr` is a live out-pointer. Zero-byte requests ask for 1 byte.
        let r = unsafe { (self.api.mem_alloc)(&mut ptr, bytes.max(1)) };
        self.api
            .check(r, &format!("cuMemAlloc({bytes} bytes)"))
            .map_err(CudaError::Driver)?;
        Ok(DeviceBuffer {
            dev: self,
            ptr,
            bytes,
        })
    }

    /// JIT-compiles the build's PTX and uploads its weights.
    pub fn load(&self, build: &CudaBuild) -> Result<LoadedModule<'_>, CudaError> {
        let target_sm: u32 = build
            .plan
            .target
            .trim_start_matches("sm_")
            .parse()
            .map_err(|_| CudaError::Driver(format!("plan target '{}'", build.plan.target)))?;
        if self.sm < target_sm {
            return Err(CudaError::Driver(format!(
                "{} cannot run PTX built for {} (build for an older target, e.g. --target cuda:sm_80)",
                self.name, build.plan.target
            )));
        }
        self.make_current()?;
        let ptx = CString::new(build.ptx.as_str())
            .map_err(|_| CudaError::Driver("the PTX contains a NUL byte".into()))?;
        let mut err_log = vec![0u8; JIT_LOG_BYTES];
        let mut info_log = vec![0u8; JIT_LOG_BYTES];
        let mut opts = [
            CU_JIT_ERROR_LOG_BUFFER,
            CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
            CU_JIT_INFO_LOG_BUFFER,
            CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
        ];
        let mut vals: [*mut c_void; 4] = [
            err_log.as_mut_ptr().cast(),
            JIT_LOG_BYTES as *mut c_void,
            info_log.as_mut_ptr().cast(),
            JIT_LOG_BYTES as *mut c_void,
        ];
        let mut module: CuModule = std::ptr::null_mut();
        // SAFETY: `ptx` is a NUL-terminated image; the option arrays have
        // the 4 entries passed, log buffers are live and as large as the
        // sizes given (passed by value in the pointer slot, as the API
        // specifies); `module` is a live out-pointer.
        let r = unsafe {
            (self.api.module_load_data_ex)(
                &mut module,
                ptx.as_ptr().cast(),
                opts.len() as c_uint,
                opts.as_mut_ptr(),
                vals.as_mut_ptr(),
            )
        };
        if r != 0 {
            let log = String::from_utf8_lossy(&err_log);
            let log = log.trim_end_matches('\0').trim();
            let base = self.api.check(r, "cuModuleLoadDataEx").unwrap_err();
            return Err(CudaError::Driver(format!("{base}; JIT log:\n{log}")));
        }
        let mut loaded = LoadedModule {
            dev: self,
            module,
            functions: Vec::new(),
            weights: self.alloc(build.weights.len())?,
            arena: self.alloc(build.plan.arena_bytes)?,
            status: self.alloc(4)?,
            build: build.clone(),
        };
        for k in &build.plan.kernels {
            let name = CString::new(k.entry.as_str())
                .map_err(|_| CudaError::Driver(format!("entry name '{}'", k.entry)))?;
            let mut f: CuFunction = std::ptr::null_mut();
            // SAFETY: `module` was loaded above and outlives this call;
            // `name` is NUL-terminated; `f` is a live out-pointer.
            let r = unsafe { (self.api.module_get_function)(&mut f, module, name.as_ptr()) };
            self.api
                .check(r, &format!("cuModuleGetFunction({})", k.entry))
                .map_err(CudaError::Driver)?;
            loaded.functions.push(f);
        }
        loaded.weights.upload(&build.weights)?;
        Ok(loaded)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: the context was created in `open` and every module and
        // buffer borrowing this device has been dropped (they borrow it).
        unsafe {
            (self.api.ctx_destroy)(self.ctx);
        }
    }
}

/// A device allocation, freed on drop.
struct DeviceBuffer<'d> {
    dev: &'d Device,
    ptr: CuDevicePtr,
    bytes: usize,
}

impl DeviceBuffer<'_> {
    fn upload(&self, data: &[u8]) -> Result<(), CudaError> {
        assert!(data.len() <= self.bytes.max(1), "upload fits the buffer");
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: copies `data.len()` bytes from a live host slice into this
        // allocation, which holds at least that many (asserted above).
        let r = unsafe { (self.dev.api.memcpy_htod)(self.ptr, data.as_ptr().cast(), data.len()) };
        self.dev
            .api
            .check(r, "cuMemcpyHtoD")
            .map_err(CudaError::Driver)
    }

    fn download(&self, out: &mut [u8]) -> Result<(), CudaError> {
        assert!(out.len() <= self.bytes.max(1), "download fits the buffer");
        if out.is_empty() {
            return Ok(());
        }
        // SAFETY: copies `out.len()` bytes (at most this allocation's size)
        // into a live, exclusively borrowed host slice of that length.
        let r = unsafe { (self.dev.api.memcpy_dtoh)(out.as_mut_ptr().cast(), self.ptr, out.len()) };
        self.dev
            .api
            .check(r, "cuMemcpyDtoH")
            .map_err(CudaError::Driver)
    }
}

impl Drop for DeviceBuffer<'_> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from cuMemAlloc in this device's context and
        // is freed exactly once, here.
        unsafe {
            (self.dev.api.mem_free)(self.ptr);
        }
    }
}

/// A build loaded on a device: its module, weights, arena and status word.
pub struct LoadedModule<'d> {
    dev: &'d Device,
    module: CuModule,
    functions: Vec<CuFunction>,
    weights: DeviceBuffer<'d>,
    arena: DeviceBuffer<'d>,
    status: DeviceBuffer<'d>,
    build: CudaBuild,
}

impl LoadedModule<'_> {
    /// Runs every kernel in order on `inputs` (program input order) and
    /// returns the outputs (program output order).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, CudaError> {
        let plan = &self.build.plan;
        let dev = self.dev;
        dev.make_current()?;
        if inputs.len() != plan.inputs.len() {
            return Err(CudaError::Driver(format!(
                "expected {} inputs, got {}",
                plan.inputs.len(),
                inputs.len()
            )));
        }
        let mut input_bufs = Vec::new();
        for (&b, t) in plan.inputs.iter().zip(inputs) {
            let bp = &plan.buffers[b];
            if t.dtype().name() != bp.dtype || t.shape() != bp.shape.as_slice() {
                return Err(CudaError::Driver(format!(
                    "input '{}': expected {}{:?}, got {}{:?}",
                    bp.name,
                    bp.dtype,
                    bp.shape,
                    t.dtype(),
                    t.shape()
                )));
            }
            let buf = dev.alloc(bp.bytes)?;
            buf.upload(&t.data().to_le_bytes())?;
            input_bufs.push(buf);
        }
        let output_bufs = plan
            .outputs
            .iter()
            .map(|&b| dev.alloc(plan.buffers[b].bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let address: Vec<CuDevicePtr> = plan
            .buffers
            .iter()
            .map(|b| match b.kind {
                BufferKind::Input { index } => input_bufs[index].ptr,
                BufferKind::Output { index } => output_bufs[index].ptr,
                BufferKind::Weight { offset } => self.weights.ptr + offset as u64,
                BufferKind::Temp { offset } => self.arena.ptr + offset.unwrap_or(0) as u64,
            })
            .collect();
        // SAFETY: clears the 4-byte status word this module allocated.
        let r = unsafe { (dev.api.memset_d8)(self.status.ptr, 0, 4) };
        dev.api.check(r, "cuMemsetD8").map_err(CudaError::Driver)?;
        for (k, f) in plan.kernels.iter().zip(&self.functions) {
            if k.grid.contains(&0) {
                continue;
            }
            let mut args: Vec<CuDevicePtr> = k.params.iter().map(|&b| address[b]).collect();
            args.push(self.status.ptr);
            let mut arg_ptrs: Vec<*mut c_void> = args
                .iter_mut()
                .map(|a| (a as *mut CuDevicePtr).cast())
                .collect();
            // SAFETY: `f` is an entry of the loaded module whose parameters
            // are exactly `k.params.len()` + 1 `.u64` values (the emitter
            // and the plan are built from the same list); each points into
            // an allocation of the buffer's full size (inputs and outputs
            // above, weights and arena at the plan's offsets, which
            // `plan.check` proved disjoint for temps live together), and
            // `arg_ptrs` points at `args`, both alive until the launch
            // returns (parameters are copied at launch). Shared memory is
            // static (declared in the PTX), so 0 dynamic bytes are asked.
            let r = unsafe {
                (dev.api.launch_kernel)(
                    *f,
                    k.grid[0],
                    k.grid[1],
                    k.grid[2],
                    k.block,
                    1,
                    1,
                    0,
                    std::ptr::null_mut(),
                    arg_ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            };
            dev.api
                .check(r, &format!("cuLaunchKernel({})", k.entry))
                .map_err(CudaError::Driver)?;
        }
        // SAFETY: waits for the launches above in the current context.
        let r = unsafe { (dev.api.ctx_synchronize)() };
        dev.api
            .check(r, "cuCtxSynchronize")
            .map_err(CudaError::Driver)?;
        let mut word = [0u8; 4];
        self.status.download(&mut word)?;
        let word = u32::from_le_bytes(word);
        if word != 0 {
            let (k, code) = decode_status(word);
            let name = plan.kernels.get(k).map_or("?", |k| k.name.as_str());
            return Err(CudaError::Driver(format!(
                "kernel '{name}' stopped: {}",
                status_message(code)
            )));
        }
        let mut outputs = Vec::new();
        for (&b, buf) in plan.outputs.iter().zip(&output_bufs) {
            let bp = &plan.buffers[b];
            let mut bytes = vec![0u8; bp.bytes];
            buf.download(&mut bytes)?;
            let dtype = varc_ir::DType::ALL
                .into_iter()
                .find(|d| d.name() == bp.dtype)
                .ok_or_else(|| CudaError::Driver(format!("dtype '{}'", bp.dtype)))?;
            let data = TensorData::from_le_bytes(dtype, &bytes).map_err(CudaError::Driver)?;
            outputs.push(Tensor::new(bp.shape.clone(), data).map_err(CudaError::Driver)?);
        }
        Ok(outputs)
    }
}

impl Drop for LoadedModule<'_> {
    fn drop(&mut self) {
        // SAFETY: the module was loaded in `Device::load` and is unloaded
        // once; no launch is in flight (every run synchronises).
        unsafe {
            (self.dev.api.module_unload)(self.module);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn opening_never_panics() {
        // On machines without CUDA this is an error naming the reason; with
        // a GPU, a device. Either way, no panic.
        match super::Device::open() {
            Ok(d) => assert!(d.sm > 0),
            Err(e) => assert!(!e.is_empty()),
        }
    }
}
