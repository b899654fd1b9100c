//! TensorBoard event files, written by hand so that logging needs neither TensorFlow nor a protobuf crate.
//!
//! An event file is a sequence of TFRecords: `u64 LE length`, `u32 LE masked CRC32C(length bytes)`,
//! `data`, `u32 LE masked CRC32C(data)`. Each `data` is an `Event` protobuf; the first one carries only
//! the file version `brain.Event:2`, the others a `Summary` of scalar values:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
//!           SessionLog session_log = 7; }
//! Summary { repeated Value value = 1; }
//! SessionLog { SessionStatus status = 1; }   // START = 1
//! Value   { string tag = 1; float simple_value = 2; }
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

const FILE_VERSION: &str = "brain.Event:2";

/// Appends scalar summaries to one new event file.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir` if needed and a fresh `events.out.tfevents.<unix secs>.<hostname>` in it (with a
    /// numeric suffix if a file of that name exists, e.g. a resume within the same second), so every
    /// writer has a file of its own and TensorBoard merges them by step.
    pub fn create(dir: &Path, wall_time: f64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let base = format!("events.out.tfevents.{}.{}", wall_time as u64, hostname());
        let mut suffix = 0;
        let (file, path) = loop {
            let name = if suffix == 0 { base.clone() } else { format!("{base}.{suffix}") };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => suffix += 1,
                Err(e) => return Err(e),
            }
        };
        let mut writer = Self { file: BufWriter::new(file), path };
        let mut event = Vec::new();
        put_fixed64(&mut event, 1, wall_time.to_bits());
        put_bytes(&mut event, 3, FILE_VERSION.as_bytes());
        writer.write_record(&event)?;
        writer.flush()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event holding a scalar per `(tag, value)`. TensorBoard stores scalars as f32.
    pub fn add_scalars(&mut self, step: u64, wall_time: f64, scalars: &[(&str, f64)]) -> io::Result<()> {
        let mut summary = Vec::new();
        for &(tag, value) in scalars {
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, tag.as_bytes());
            put_fixed32(&mut entry, 2, (value as f32).to_bits());
            put_bytes(&mut summary, 1, &entry);
        }
        let mut event = Vec::new();
        put_fixed64(&mut event, 1, wall_time.to_bits());
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// A `SessionLog { status: START }` event at `step`: TensorBoard then drops every value of
    /// step ≥ `step` it read from earlier files of the run, as it does for a restarted job. A
    /// resumed run writes it so the steps it repeats after its checkpoint are not shown twice.
    pub fn add_restart(&mut self, step: u64, wall_time: f64) -> io::Result<()> {
        let mut session_log = Vec::new();
        put_varint_field(&mut session_log, 1, 1);
        let mut event = Vec::new();
        put_fixed64(&mut event, 1, wall_time.to_bits());
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 7, &session_log);
        self.write_record(&event)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn write_record(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.file.write_all(&len)?;
        self.file.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.file.write_all(data)?;
        self.file.write_all(&masked_crc32c(data).to_le_bytes())
    }
}

/// The machine name TensorBoard expects in event-file names; "localhost" when it cannot be read.
fn hostname() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let name: String = name.trim().chars().filter(|c| !matches!(c, '/' | '\\')).collect();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

// --- protobuf wire format (only what `Event` needs) ---

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u64, wire_type: u64) {
    put_varint(buf, (field << 3) | wire_type);
}

fn put_varint_field(buf: &mut Vec<u8>, field: u64, v: u64) {
    put_key(buf, field, WIRE_VARINT);
    put_varint(buf, v);
}

fn put_fixed64(buf: &mut Vec<u8>, field: u64, bits: u64) {
    put_key(buf, field, WIRE_FIXED64);
    buf.extend_from_slice(&bits.to_le_bytes());
}

fn put_fixed32(buf: &mut Vec<u8>, field: u64, bits: u32) {
    put_key(buf, field, WIRE_FIXED32);
    buf.extend_from_slice(&bits.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(buf, field, WIRE_LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

// --- CRC32C (Castagnoli), as TFRecord uses ---

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| CRC32C_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8))
}

/// TFRecord stores CRCs rotated and offset, because a CRC of data that itself embeds CRCs is weak.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// A minimal reader, for tests here and in `metrics`: checks both CRCs of each record and decodes the
/// fields this writer produces.
#[cfg(test)]
pub(crate) mod read {
    use super::*;

    #[derive(Debug, Default, PartialEq)]
    pub struct Event {
        pub wall_time: f64,
        pub step: u64,
        pub file_version: Option<String>,
        /// `SessionLog.status` (1 = START), when the event is a session log.
        pub session_status: Option<u64>,
        /// (tag, simple_value) pairs of the event's summary.
        pub scalars: Vec<(String, f32)>,
    }

    pub fn read_events(path: &Path) -> Vec<Event> {
        let bytes = fs::read(path).unwrap();
        let mut rest = &bytes[..];
        let mut events = Vec::new();
        while !rest.is_empty() {
            let (len_bytes, tail) = rest.split_at(8);
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            assert_eq!(u32_at(tail, 0), masked_crc32c(len_bytes), "length CRC");
            let data = &tail[4..4 + len];
            assert_eq!(u32_at(tail, 4 + len), masked_crc32c(data), "data CRC");
            events.push(decode_event(data));
            rest = &tail[8 + len..];
        }
        events
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    fn decode_event(data: &[u8]) -> Event {
        let mut event = Event::default();
        for (field, value) in fields(data) {
            match (field, value) {
                (1, Field::Fixed64(bits)) => event.wall_time = f64::from_bits(bits),
                (2, Field::Varint(v)) => event.step = v,
                (3, Field::Bytes(b)) => event.file_version = Some(String::from_utf8(b.to_vec()).unwrap()),
                (5, Field::Bytes(summary)) => {
                    for (field, value) in fields(summary) {
                        let (1, Field::Bytes(entry)) = (field, value) else { panic!("unexpected Summary field") };
                        let (mut tag, mut simple_value) = (None, None);
                        for (field, value) in fields(entry) {
                            match (field, value) {
                                (1, Field::Bytes(b)) => tag = Some(String::from_utf8(b.to_vec()).unwrap()),
                                (2, Field::Fixed32(bits)) => simple_value = Some(f32::from_bits(bits)),
                                other => panic!("unexpected Value field {other:?}"),
                            }
                        }
                        event.scalars.push((tag.unwrap(), simple_value.unwrap()));
                    }
                }
                (7, Field::Bytes(log)) => {
                    for (field, value) in fields(log) {
                        let (1, Field::Varint(status)) = (field, value) else { panic!("unexpected SessionLog field") };
                        event.session_status = Some(status);
                    }
                }
                other => panic!("unexpected Event field {other:?}"),
            }
        }
        event
    }

    #[derive(Debug)]
    enum Field<'a> {
        Varint(u64),
        Fixed64(u64),
        Fixed32(u32),
        Bytes(&'a [u8]),
    }

    fn fields(mut data: &[u8]) -> Vec<(u64, Field<'_>)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let key = varint(&mut data);
            let field = match key & 7 {
                WIRE_VARINT => Field::Varint(varint(&mut data)),
                WIRE_FIXED64 => {
                    let (v, rest) = data.split_at(8);
                    data = rest;
                    Field::Fixed64(u64::from_le_bytes(v.try_into().unwrap()))
                }
                WIRE_FIXED32 => {
                    let (v, rest) = data.split_at(4);
                    data = rest;
                    Field::Fixed32(u32::from_le_bytes(v.try_into().unwrap()))
                }
                WIRE_LEN => {
                    let len = varint(&mut data) as usize;
                    let (v, rest) = data.split_at(len);
                    data = rest;
                    Field::Bytes(v)
                }
                wire => panic!("unexpected wire type {wire}"),
            };
            out.push((key >> 3, field));
        }
        out
    }

    fn varint(data: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = data[0];
            *data = &data[1..];
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint longer than 10 bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::read::{read_events, Event};
    use super::*;

    #[test]
    fn crc32c_standard_vector() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn varints_encode_little_endian_base_128() {
        let mut buf = Vec::new();
        put_varint(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02]);
        buf.clear();
        put_varint(&mut buf, u64::MAX);
        assert_eq!(buf.len(), 10);
    }

    #[test]
    fn writes_version_then_scalars_that_read_back() {
        let dir = std::env::temp_dir().join(format!("rlhf-tb-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut writer = EventWriter::create(&dir, 1_700_000_000.25).unwrap();
        writer.add_scalars(0, 1_700_000_001.5, &[("loss", 2.5), ("lr", 1e-5)]).unwrap();
        writer.add_scalars(300, 1_700_000_002.0, &[("loss", f64::NAN)]).unwrap();
        writer.flush().unwrap();
        let name = writer.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("events.out.tfevents.1700000000."), "{name}");
        // A second writer in the same second gets its own file.
        let second = EventWriter::create(&dir, 1_700_000_000.75).unwrap();
        assert_ne!(second.path(), writer.path());

        let events = read_events(writer.path());
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0],
            Event { wall_time: 1_700_000_000.25, file_version: Some(FILE_VERSION.into()), ..Default::default() }
        );
        assert_eq!(
            events[1],
            Event {
                wall_time: 1_700_000_001.5,
                step: 0,
                file_version: None,
                session_status: None,
                scalars: vec![("loss".into(), 2.5), ("lr".into(), 1e-5_f32)],
            }
        );
        assert_eq!(events[2].step, 300);
        assert_eq!(events[2].scalars[0].0, "loss");
        assert!(events[2].scalars[0].1.is_nan());
        fs::remove_dir_all(&dir).unwrap();
    }
}
