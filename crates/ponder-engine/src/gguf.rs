//! GGUF files: a reader that checks a file before llama.cpp sees it, and a writer.
//!
//! llama.cpp reports a bad file as a null pointer and a log line. Reading the header, the
//! metadata and the tensor table here first turns a missing, truncated or foreign file into an
//! error that names the file and what is wrong with it. The writer builds the tiny random-weight
//! models the tests and benchmarks use (see [`crate::tiny`]).
//!
//! Format (version 3, little-endian): magic `GGUF`, version, tensor count, metadata count, the
//! metadata (key, type, value), the tensor infos (name, dims, type, offset), padding to the
//! alignment (`general.alignment`, default 32), then the tensor data.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// The value as an unsigned integer, for any integer type that holds one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Tensor element types this crate knows the size of (a subset of `ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    /// Any other `ggml_type`, with its id; its byte size is known for the common quantisations.
    Other(u32),
}

impl TensorType {
    fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Other(id) => id,
        }
    }

    fn from_id(id: u32) -> Self {
        match id {
            0 => TensorType::F32,
            1 => TensorType::F16,
            other => TensorType::Other(other),
        }
    }

    /// Bytes taken by `elements` values; `None` for a type whose block layout is not listed.
    pub fn byte_size(self, elements: u64) -> Option<u64> {
        // (elements per block, bytes per block) from ggml's type traits.
        let (block, bytes) = match self.id() {
            0 => (1, 4),      // F32
            1 | 30 => (1, 2), // F16, BF16
            2 => (32, 18),    // Q4_0
            3 => (32, 20),    // Q4_1
            6 => (32, 22),    // Q5_0
            7 => (32, 24),    // Q5_1
            8 => (32, 34),    // Q8_0
            10 => (256, 84),  // Q2_K
            11 => (256, 110), // Q3_K
            12 => (256, 144), // Q4_K
            13 => (256, 176), // Q5_K
            14 => (256, 210), // Q6_K
            15 => (256, 292), // Q8_K
            24 => (1, 1),     // I8
            25 => (1, 2),     // I16
            26 => (1, 4),     // I32
            27 => (1, 8),     // I64
            28 => (1, 8),     // F64
            _ => return None,
        };
        Some(elements.div_ceil(block) * bytes)
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, innermost first (ggml's `ne` order).
    pub dims: Vec<u64>,
    pub ty: TensorType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// What [`read_header`] found.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    /// Where the data section starts.
    pub data_offset: u64,
    /// The file's length.
    pub file_len: u64,
}

impl Header {
    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }
}

/// Why a file is not a usable GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("model file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a GGUF file (it starts with {magic:?}, not \"GGUF\")")]
    NotGguf { path: PathBuf, magic: String },
    #[error("{path} is GGUF version {version}; versions 2 and 3 are supported")]
    Version { path: PathBuf, version: u32 },
    #[error("{path} is truncated: {what}")]
    Truncated { path: PathBuf, what: String },
    #[error("{path} is malformed: {what}")]
    Malformed { path: PathBuf, what: String },
}

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Bounds on counts read from the file, so a corrupt header cannot ask for terabytes.
const MAX_COUNT: u64 = 1 << 24;

struct Cursor<R> {
    inner: R,
    pos: u64,
    len: u64,
    path: PathBuf,
}

impl<R: Read> Cursor<R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, GgufError> {
        if self.pos + n > self.len {
            return Err(GgufError::Truncated {
                path: self.path.clone(),
                what: format!(
                    "{what} needs {n} bytes at offset {} but the file ends at {}",
                    self.pos, self.len
                ),
            });
        }
        let size = usize::try_from(n).map_err(|_| self.malformed(format!("{what} is too long")))?;
        let mut buf = vec![0; size];
        self.inner
            .read_exact(&mut buf)
            .map_err(|source| GgufError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let v = self.bytes(N as u64, what)?;
        let mut out = [0; N];
        out.copy_from_slice(&v);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn count(&mut self, what: &str) -> Result<u64, GgufError> {
        let n = self.u64(what)?;
        if n > MAX_COUNT {
            return Err(self.malformed(format!("{what} is {n}, more than any real model has")));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        let raw = self.bytes(n, what)?;
        String::from_utf8(raw).map_err(|_| self.malformed(format!("{what} is not UTF-8")))
    }

    fn malformed(&self, what: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.clone(),
            what,
        }
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array(key)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => Value::Bool(self.array::<1>(key)?[0] != 0),
            8 => Value::String(self.string(key)?),
            9 if depth == 0 => {
                let item_ty = self.u32(key)?;
                let n = self.count(key)?;
                let mut items = Vec::with_capacity(n.min(4096) as usize);
                for _ in 0..n {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(self.malformed(format!("metadata {key} has unknown type {other}"))),
        })
    }
}

/// Reads and checks a GGUF file's header, metadata and tensor table, and that every tensor's
/// data lies inside the file.
pub fn read_header(path: &Path) -> Result<Header, GgufError> {
    let io = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(GgufError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            magic: "a directory".into(),
        });
    }
    let len = meta.len();
    let mut c = Cursor {
        inner: BufReader::new(file),
        pos: 0,
        len,
        path: path.to_path_buf(),
    };
    if len < 4 {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            magic: format!("{len} bytes"),
        });
    }
    let magic = c.array::<4>("magic")?;
    if &magic != MAGIC {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            magic: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version {
            path: path.to_path_buf(),
            version,
        });
    }
    let n_tensors = c.count("tensor count")?;
    let n_kv = c.count("metadata count")?;
    let mut metadata = Vec::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key {i}"))?;
        let ty = c.u32(&key)?;
        let value = c.value(ty, &key, 0)?;
        metadata.push((key, value));
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor name {i}"))?;
        let n_dims = c.u32(&name)?;
        if n_dims > 4 {
            return Err(c.malformed(format!("tensor {name} has {n_dims} dimensions (at most 4)")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&name)?);
        }
        let ty = TensorType::from_id(c.u32(&name)?);
        let offset = c.u64(&name)?;
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
        });
    }
    let alignment = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(DEFAULT_ALIGNMENT)
        .max(1);
    let data_offset = c.pos.div_ceil(alignment) * alignment;
    for t in &tensors {
        let Some(size) = t.ty.byte_size(t.elements()) else {
            continue;
        };
        let end = data_offset + t.offset + size;
        if end > len {
            return Err(GgufError::Truncated {
                path: path.to_path_buf(),
                what: format!(
                    "tensor {} ends at byte {end} but the file has {len} bytes",
                    t.name
                ),
            });
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        data_offset,
        file_len: len,
    })
}

/// Builds a GGUF file in memory: metadata, then tensors (f32 or f16), then [`GgufWriter::write`].
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, TensorType, Vec<u8>)>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds an f32 tensor. `dims` innermost first: a `[rows, cols]` row-major matrix is `[cols, rows]`.
    pub fn add_f32(&mut self, name: &str, dims: &[u64], data: &[f32]) -> &mut Self {
        assert_eq!(dims.iter().product::<u64>(), data.len() as u64, "{name}");
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensors
            .push((name.to_string(), dims.to_vec(), TensorType::F32, bytes));
        self
    }

    /// Adds an f16 tensor, converting each value with [`f32_to_f16`]. `dims` as for
    /// [`GgufWriter::add_f32`].
    pub fn add_f16(&mut self, name: &str, dims: &[u64], data: &[f32]) -> &mut Self {
        assert_eq!(dims.iter().product::<u64>(), data.len() as u64, "{name}");
        let bytes = data
            .iter()
            .flat_map(|&x| f32_to_f16(x).to_le_bytes())
            .collect();
        self.tensors
            .push((name.to_string(), dims.to_vec(), TensorType::F16, bytes));
        self
    }

    /// Writes the file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for (name, dims, ty, data) in &self.tensors {
            put_string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        pad(&mut out);
        let data_start = out.len() as u64;
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend_from_slice(data);
        }
        pad(&mut out);
        let mut file = File::create(path)?;
        file.write_all(&out)?;
        file.sync_all()
    }
}

/// IEEE 754 binary16 bits of `x`, rounded to nearest, ties to even; overflow gives infinity,
/// values below the smallest subnormal give (signed) zero, NaN stays NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    // Unbiased exponent, then rebiased for binary16 (bias 15).
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal (or zero) in binary16: shift the mantissa with its implicit 1 into place.
        if e < -10 {
            return sign;
        }
        let full = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = full >> shift;
        let rest = full & ((1 << shift) - 1);
        let midpoint = 1 << (shift - 1);
        let round = rest > midpoint || (rest == midpoint && half & 1 == 1);
        return sign | (half + u32::from(round)) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    let round = rest > 0x1000 || (rest == 0x1000 && half & 1 == 1);
    // A carry out of the mantissa bumps the exponent, up to infinity: the bit layout does it.
    sign | (half + u32::from(round)) as u16
}

fn pad(out: &mut Vec<u8>) {
    let len = (out.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    out.resize(len as usize, 0);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            let item_ty = items.first().map_or(8, Value::type_id);
            out.extend_from_slice(&item_ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("m.gguf");
        let mut w = GgufWriter::new();
        w.add("general.architecture", Value::String("llama".into()))
            .add("llama.block_count", Value::U32(2))
            .add(
                "tokenizer.ggml.tokens",
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            )
            .add_f32("w", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .add_f32("v", &[5], &[0.5; 5])
            .add_f16("h", &[4], &[1.0, -2.0, 0.5, 0.1]);
        w.write(&path).expect("test setup");
        path
    }

    #[test]
    fn f16_conversion_rounds_to_nearest_even() {
        let cases: [(f32, u16); 16] = [
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (0.5, 0x3800),
            (0.1, 0x2e66),
            (-0.0, 0x8000),
            (65504.0, 0x7bff),
            // Halfway between 65504 and 65536: ties to even, which is infinity.
            (65520.0, 0x7c00),
            // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: the even one is 1.
            (1.0 + 2f32.powi(-11), 0x3c00),
            // 1 + 3·2^-11 lies halfway between 0x3c01 and 0x3c02: the even one is 0x3c02.
            (1.0 + 3.0 * 2f32.powi(-11), 0x3c02),
            (2f32.powi(-14), 0x0400),
            (2f32.powi(-15), 0x0200),
            (2f32.powi(-24), 0x0001),
            (2f32.powi(-25), 0x0000),
            (3.0 * 2f32.powi(-26), 0x0001),
            (f32::INFINITY, 0x7c00),
            (f32::NEG_INFINITY, 0xfc00),
        ];
        for (x, want) in cases {
            assert_eq!(f32_to_f16(x), want, "{x:e}");
        }
        assert_eq!(f32_to_f16(f32::NAN) & 0x7c00, 0x7c00);
        assert_ne!(f32_to_f16(f32::NAN) & 0x3ff, 0, "NaN stays NaN");
    }

    #[test]
    fn writes_and_reads_back() {
        let dir = tempdir();
        let path = sample(&dir);
        let h = read_header(&path).expect("test setup");
        assert_eq!(h.version, 3);
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.get_u64("llama.block_count"), Some(2));
        assert_eq!(h.tensors.len(), 3);
        assert_eq!(h.tensors[0].dims, vec![3, 2]);
        assert_eq!(h.tensors[1].offset, 32, "second tensor starts aligned");
        assert_eq!(h.tensors[2].offset, 64);
        assert_eq!(h.tensors[2].ty, TensorType::F16);
        let bytes = std::fs::read(&path).expect("test setup");
        let at = (h.data_offset + h.tensors[2].offset) as usize;
        assert_eq!(
            &bytes[at..at + 8],
            &[0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0x66, 0x2e],
            "f16 values little-endian"
        );
        assert_eq!(h.data_offset % 32, 0);
    }

    #[test]
    fn names_the_fault() {
        let dir = tempdir();
        let path = sample(&dir);
        let bytes = std::fs::read(&path).expect("test setup");

        let cut = dir.join("cut.gguf");
        std::fs::write(&cut, &bytes[..bytes.len() - 40]).expect("test setup");
        let err = read_header(&cut).expect_err("must fail").to_string();
        assert!(err.contains("truncated") && err.contains("tensor"), "{err}");

        let head = dir.join("head.gguf");
        std::fs::write(&head, &bytes[..30]).expect("test setup");
        let err = read_header(&head).expect_err("must fail").to_string();
        assert!(err.contains("truncated"), "{err}");

        let text = dir.join("text.gguf");
        std::fs::write(&text, "hello world").expect("test setup");
        let err = read_header(&text).expect_err("must fail").to_string();
        assert!(
            err.contains("not a GGUF file") && err.contains("text.gguf"),
            "{err}"
        );

        let err = read_header(&dir.join("nope.gguf"))
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    fn tempdir() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ponder-gguf-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test setup");
        dir
    }
}
