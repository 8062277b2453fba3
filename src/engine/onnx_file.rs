//! Reading an ONNX file's protobuf without holding its weights.
//!
//! Decoding a whole `model.onnx` copies every weight into the protobuf (and the importer
//! copies them again into its tensors), so a model of W bytes of weights peaked at about
//! 2.7 W while it loaded. Instead, the file is mapped and only its structure is read: each
//! large initializer's `raw_data` is replaced by ONNX external data pointing at its own bytes
//! in the same file (`location`, `offset`, `length`, `data_location = EXTERNAL`), and the
//! importer reads those one tensor at a time. The rewrite works on the protobuf wire format
//! and leaves everything else byte for byte; anything it does not recognise leaves the file
//! to be decoded as it is, where the decoder reports what is wrong.

use anyhow::Context;
use prost::Message;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use tract_onnx::data_resolver::ModelDataResolver;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::TractResult;

/// Initializers with at least this many bytes of `raw_data` are read from the file when the
/// importer needs them, not decoded into the protobuf.
pub const EXTERNAL_FROM_BYTES: usize = 64 << 10;

const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_RAW_DATA: u64 = 9;
const TENSOR_EXTERNAL_DATA: u64 = 13;
const TENSOR_DATA_LOCATION: u64 = 14;
const ENTRY_KEY: u64 = 1;
const ENTRY_VALUE: u64 = 2;
const DATA_LOCATION_EXTERNAL: u64 = 1;
const LEN: u8 = 2;

/// The model at `path` as tract's protobuf; its large initializers refer to their bytes in
/// the file (read through the model's directory, see [`tract_onnx::Onnx::parse`]) when the
/// file lies in that directory (not a link to elsewhere, which the importer would refuse).
pub fn read(path: &Path) -> anyhow::Result<ModelProto> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the map is read only while this function runs, as tract's own
    // `proto_model_for_path` does; repository files are not modified in place.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("reading {}", path.display()))?;
    let rewritten = location(path).and_then(|at| externalize(&map, at, EXTERNAL_FROM_BYTES));
    let bytes: &[u8] = rewritten.as_deref().unwrap_or(&map);
    Ok(ModelProto::decode(bytes)?)
}

/// Reads the importer's external data as tract's `FopenDataResolver` does, but each tensor
/// with one `read` straight into its buffer, where tract's reads it through an 8 KiB
/// `BufReader`, a system call and a copy per 8 KiB (on the resnet sample, a tenth of its
/// load).
pub struct WholeReads;

impl ModelDataResolver for WholeReads {
    fn read_bytes_from_path(
        &self,
        buf: &mut Vec<u8>,
        p: &Path,
        offset: usize,
        length: Option<usize>,
    ) -> TractResult<()> {
        let mut file = File::open(p).with_context(|| format!("opening {}", p.display()))?;
        let size = file.metadata()?.len();
        let offset = offset as u64;
        anyhow::ensure!(
            offset <= size,
            "external data offset {offset} is past the end of {} ({size} bytes)",
            p.display()
        );
        let length = length.map_or(size - offset, |l| l as u64);
        anyhow::ensure!(
            length <= size - offset,
            "external data of {length} bytes from offset {offset} exceeds {} ({size} bytes)",
            p.display()
        );
        buf.reserve_exact(usize::try_from(length)?);
        file.seek(SeekFrom::Start(offset))?;
        let read = file.take(length).read_to_end(buf)?;
        anyhow::ensure!(
            read as u64 == length,
            "{} ended {} bytes into external data of {length}",
            p.display(),
            read
        );
        Ok(())
    }
}

/// The file name external data may name: `path`'s, when the file really lies in its
/// directory.
fn location(path: &Path) -> Option<&str> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let real = path.canonicalize().ok()?;
    if real.parent()? != dir.canonicalize().ok()? {
        return None;
    }
    path.file_name()?.to_str()
}

/// `model` (a ModelProto's bytes) with every graph initializer's `raw_data` of at least
/// `min` bytes replaced by external data at its offset in `model` in the file `location`;
/// `None` when there is none or the bytes are not a well-formed protobuf.
pub fn externalize(model: &[u8], location: &str, min: usize) -> Option<Vec<u8>> {
    let mut changed = false;
    let mut out = Vec::new();
    for field in fields(model)? {
        match field.payload {
            Some(graph) if field.number == MODEL_GRAPH => {
                let mut rewritten = Vec::new();
                for f in fields(graph)? {
                    let tensor = match f.payload {
                        Some(t) if f.number == GRAPH_INITIALIZER => {
                            external_tensor(model, t, location, min)
                        }
                        _ => None,
                    };
                    match tensor {
                        Some(t) => {
                            changed = true;
                            put_len(&mut rewritten, GRAPH_INITIALIZER, &t);
                        }
                        None => rewritten.extend_from_slice(f.whole),
                    }
                }
                put_len(&mut out, MODEL_GRAPH, &rewritten);
            }
            _ => out.extend_from_slice(field.whole),
        }
    }
    changed.then_some(out)
}

/// A TensorProto whose one `raw_data` of at least `min` bytes (lying within `file`) becomes
/// external data; `None` to keep the tensor as it is.
fn external_tensor(file: &[u8], tensor: &[u8], location: &str, min: usize) -> Option<Vec<u8>> {
    let fields = fields(tensor)?;
    if fields
        .iter()
        .any(|f| f.number == TENSOR_EXTERNAL_DATA || f.number == TENSOR_DATA_LOCATION)
    {
        return None;
    }
    let mut raw = fields.iter().filter(|f| f.number == TENSOR_RAW_DATA);
    let data = raw.next()?.payload?;
    if raw.next().is_some() || data.len() < min {
        return None;
    }
    let offset = (data.as_ptr() as usize).checked_sub(file.as_ptr() as usize)?;
    let mut out = Vec::with_capacity(tensor.len() - data.len() + 64);
    for f in fields.iter().filter(|f| f.number != TENSOR_RAW_DATA) {
        out.extend_from_slice(f.whole);
    }
    for (key, value) in [
        ("location", location.to_string()),
        ("offset", offset.to_string()),
        ("length", data.len().to_string()),
    ] {
        let mut entry = Vec::new();
        put_len(&mut entry, ENTRY_KEY, key.as_bytes());
        put_len(&mut entry, ENTRY_VALUE, value.as_bytes());
        put_len(&mut out, TENSOR_EXTERNAL_DATA, &entry);
    }
    put_varint(&mut out, TENSOR_DATA_LOCATION << 3);
    put_varint(&mut out, DATA_LOCATION_EXTERNAL);
    Some(out)
}

/// One field of a protobuf message: its number, all its bytes (key included), and the
/// payload of a length-delimited one.
struct Field<'a> {
    number: u64,
    whole: &'a [u8],
    payload: Option<&'a [u8]>,
}

/// The fields of a message, or `None` if it is not well formed (or uses groups).
fn fields(mut buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let start = buf;
        let key = varint(&mut buf)?;
        let number = key >> 3;
        let payload = match (key & 7) as u8 {
            0 => {
                varint(&mut buf)?;
                None
            }
            1 => {
                buf = buf.get(8..)?;
                None
            }
            LEN => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let payload = buf.get(..len)?;
                buf = &buf[len..];
                Some(payload)
            }
            5 => {
                buf = buf.get(4..)?;
                None
            }
            _ => return None,
        };
        if number == 0 {
            return None;
        }
        out.push(Field {
            number,
            whole: &start[..start.len() - buf.len()],
            payload,
        });
    }
    Some(out)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_len(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    put_varint(out, (number << 3) | u64::from(LEN));
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{tensor_proto, GraphProto, TensorProto};

    fn tensor(name: &str, bytes: usize) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: vec![(bytes / 4) as i64],
            data_type: tensor_proto::DataType::Float as i32,
            raw_data: (0..bytes).map(|i| i as u8).collect(),
            ..Default::default()
        }
    }

    fn model(initializers: Vec<TensorProto>) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            producer_name: "test".into(),
            graph: Some(GraphProto {
                name: "g".into(),
                initializer: initializers,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn entry<'a>(t: &'a TensorProto, key: &str) -> &'a str {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map_or("", |e| e.value.as_str())
    }

    #[test]
    fn large_initializers_point_at_their_bytes_in_the_file() {
        let file = model(vec![tensor("small", 16), tensor("large", 4096)]);
        let out = externalize(&file, "model.onnx", 1024).unwrap();
        let proto = ModelProto::decode(&out[..]).unwrap();
        assert_eq!(proto.producer_name, "test");
        let graph = proto.graph.unwrap();
        assert_eq!(graph.name, "g");
        let (small, large) = (&graph.initializer[0], &graph.initializer[1]);
        assert_eq!(small.raw_data.len(), 16);
        assert!(small.external_data.is_empty());
        assert!(large.raw_data.is_empty());
        assert_eq!(large.name, "large");
        assert_eq!(large.dims, [1024]);
        assert_eq!(
            large.data_location,
            Some(tensor_proto::DataLocation::External as i32)
        );
        assert_eq!(entry(large, "location"), "model.onnx");
        let offset: usize = entry(large, "offset").parse().unwrap();
        let length: usize = entry(large, "length").parse().unwrap();
        assert_eq!(
            &file[offset..offset + length],
            &tensor("large", 4096).raw_data[..]
        );
        assert!(out.len() < 200, "{}", out.len());
    }

    #[test]
    fn nothing_large_or_malformed_leaves_the_file_as_it_is() {
        let file = model(vec![tensor("small", 16)]);
        assert_eq!(externalize(&file, "model.onnx", 1024), None);
        let large = model(vec![tensor("large", 4096)]);
        for cut in [1, 7, 100, large.len() - 1] {
            assert_eq!(externalize(&large[..cut], "m", 1024), None, "cut at {cut}");
        }
        assert_eq!(externalize(b"not a protobuf at all", "m", 1), None);
        assert_eq!(externalize(&[], "m", 1), None);
        // Already external: kept as it is.
        let mut t = tensor("ext", 4096);
        t.data_location = Some(tensor_proto::DataLocation::External as i32);
        assert_eq!(externalize(&model(vec![t]), "m", 1024), None);
    }

    #[test]
    fn whole_reads_read_exactly_the_range_asked_and_refuse_one_past_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.bin");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let read = |offset, length| {
            let mut buf = Vec::new();
            WholeReads
                .read_bytes_from_path(&mut buf, &path, offset, length)
                .map(|()| buf)
        };
        assert_eq!(read(0, None).unwrap(), bytes);
        assert_eq!(read(12_345, Some(70_000)).unwrap(), &bytes[12_345..82_345]);
        assert_eq!(read(99_999, None).unwrap(), &bytes[99_999..]);
        assert_eq!(read(100_000, Some(0)).unwrap(), b"");
        let past = read(100_001, None).unwrap_err().to_string();
        assert!(past.contains("past the end"), "{past}");
        let over = read(99_000, Some(1_001)).unwrap_err().to_string();
        assert!(over.contains("exceeds"), "{over}");
        let missing = WholeReads
            .read_bytes_from_path(&mut Vec::new(), &dir.path().join("gone"), 0, None)
            .unwrap_err();
        assert!(format!("{missing:#}").contains("gone"), "{missing:#}");
    }
}
