//! Distinct-count sketches of the `hll` extension, read and merged in the handler.
//!
//! The rollups keep their sketches in the extension's storage format (the Aggregate Knowledge
//! HLL storage specification), which `rust-hll` reads. What the crate does not give
//! is the extension's own estimate: `hll_cardinality` returns the raw estimator as a float,
//! where the crate rounds up. [`Sketch::estimate`] computes the extension's figure, so that a
//! count merged here equals the one the database gives for the same union: bit for bit where
//! both use the same `ln` (a test compares them on the real extension); a different C library
//! may round the linear-counting logarithm differently in the last bit, far below the whole
//! numbers that reports show.

use rust_hll::Hll;

/// A sketch, parsed. Explicit sets (and the empty sketch) stay in the crate's form, which
/// unions them as the extension does, promotion included; probabilistic sketches (sparse or
/// full) are unpacked into one byte per register once, so that unions and estimates are
/// plain loops over bytes.
#[derive(Clone, Debug)]
pub struct Sketch {
    form: Form,
    log2m: u32,
    width: u32,
}

#[derive(Clone, Debug)]
enum Form {
    /// An empty or explicit sketch.
    Exact(Hll),
    /// The registers of a sparse or full sketch.
    Registers(Vec<u8>),
}

/// Each (register, value) a sparse or full sketch of the crate's holds (none for an explicit
/// or empty one); a sparse one's only those it stores.
fn each_register(hll: &Hll, mut f: impl FnMut(usize, u8)) {
    match hll {
        Hll::Empty(_) | Hll::Explicit(_) => {}
        Hll::Sparse(sparse) => sparse.iter().for_each(|(&i, &v)| f(i as usize, v)),
        Hll::Dense(dense) => dense.iter().for_each(|(i, v)| f(i as usize, v)),
    }
}

impl Sketch {
    /// A sketch in the extension's storage format, as `hll_send` gives it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, String> {
        // Three header bytes: version and type; register width and log2m; cutoffs.
        let [kind, shape, _, ref body @ ..] = bytes[..] else {
            return Err(format!("an hll of {} bytes has no header", bytes.len()));
        };
        let (log2m, width) = (u32::from(shape & 0x1f), u32::from(shape >> 5) + 1);
        // The extension's own bounds (log2m 4–31 is what it accepts; this keeps the register
        // arrays small), and bodies the crate would not parse without panicking.
        if !(4..=20).contains(&log2m) || width > 6 {
            return Err(format!(
                "an hll of log2m {log2m} and width {width} is not read here"
            ));
        }
        let full = ((1usize << log2m) * width as usize).div_ceil(8);
        match kind & 0x0f {
            2 if body.len() % 8 != 0 => {
                return Err(format!("an explicit hll body of {} bytes", body.len()));
            }
            4 if body.len() > full => {
                return Err(format!("a full hll body of {} bytes", body.len()));
            }
            _ => {}
        }
        let hll = Hll::from_bytes(bytes).map_err(|e| format!("hll: {e}"))?;
        Ok(Sketch::of(hll, log2m, width))
    }

    fn of(hll: Hll, log2m: u32, width: u32) -> Sketch {
        let form = match hll {
            Hll::Sparse(_) | Hll::Dense(_) => {
                let mut registers = vec![0u8; 1 << log2m];
                each_register(&hll, |i, v| registers[i] = v);
                Form::Registers(registers)
            }
            exact => Form::Exact(exact),
        };
        Sketch { form, log2m, width }
    }

    /// The size of the sketch in memory, roughly (for cache accounting).
    pub fn bytes(&self) -> usize {
        match &self.form {
            Form::Exact(Hll::Explicit(set)) => 16 * set.len() as usize,
            Form::Exact(_) => 0,
            Form::Registers(registers) => registers.len(),
        }
    }

    /// The union of two sketches of the same shape, as the extension's `hll_union` makes it:
    /// an explicit set stays explicit up to its threshold and is promoted past it; registers
    /// take the larger value of either side.
    pub fn union(&self, other: &Sketch) -> Result<Sketch, String> {
        if (self.log2m, self.width) != (other.log2m, other.width) {
            return Err(format!(
                "hll union of shapes ({}, {}) and ({}, {})",
                self.log2m, self.width, other.log2m, other.width
            ));
        }
        // An explicit set's hashes into registers, as the extension adds a hash: the low
        // log2m bits choose the register, which keeps the largest 1 + trailing zeros of the
        // rest (0 when the rest is 0), capped at the largest value the width holds.
        let (log2m, width) = (self.log2m, self.width);
        let raise = |registers: &mut Vec<u8>, exact: &Hll| {
            if let Hll::Explicit(set) = exact {
                let top = (1u32 << width) - 1;
                for hash in set.iter() {
                    let index = (hash & ((1u64 << log2m) - 1)) as usize;
                    let rest = hash >> log2m;
                    let value = if rest == 0 {
                        0
                    } else {
                        (rest.trailing_zeros() + 1).min(top)
                    };
                    registers[index] = registers[index].max(value as u8);
                }
            }
        };
        let form = match (&self.form, &other.form) {
            (Form::Exact(a), Form::Exact(b)) => {
                let mut hll = a.clone();
                hll.union(true, b).map_err(|e| format!("hll union: {e}"))?;
                return Ok(Sketch::of(hll, self.log2m, self.width));
            }
            (Form::Registers(a), Form::Registers(b)) => {
                Form::Registers(a.iter().zip(b).map(|(x, y)| *x.max(y)).collect())
            }
            (Form::Registers(registers), Form::Exact(exact))
            | (Form::Exact(exact), Form::Registers(registers)) => {
                let mut registers = registers.clone();
                raise(&mut registers, exact);
                Form::Registers(registers)
            }
        };
        Ok(Sketch { form, ..*self })
    }

    /// `hll_cardinality`: the exact size of an explicit set; otherwise the HyperLogLog
    /// estimator over the registers, with the small-range (linear counting) and large-range
    /// corrections, in the extension's order of operations.
    pub fn estimate(&self) -> f64 {
        let registers = match &self.form {
            Form::Exact(Hll::Explicit(set)) => return set.len() as f64,
            Form::Exact(_) => return 0.0,
            Form::Registers(registers) => registers,
        };
        let nregs = registers.len() as f64;
        let mut counts = [0u32; 256];
        for &value in registers {
            counts[usize::from(value)] += 1;
        }
        let zeros = counts[0];
        let highest = counts.iter().rposition(|&n| n > 0).unwrap_or(0) as u32;
        // The extension adds 1 / 2^value register by register. Every partial sum is a
        // multiple of 2^-highest below 2 m: while that fits a double's 53 bits, each addition
        // is exact and any order gives the same bits, so the sum is taken by value.
        let sum = if self.log2m + 1 + highest <= 53 {
            counts
                .iter()
                .enumerate()
                .map(|(value, &n)| f64::from(n) * 0.5f64.powi(value as i32))
                .sum()
        } else {
            registers
                .iter()
                .fold(0.0, |sum, &value| sum + 0.5f64.powi(i32::from(value)))
        };
        let gamma_m_squared = match registers.len() {
            16 => 0.673 * nregs * nregs,
            32 => 0.697 * nregs * nregs,
            64 => 0.709 * nregs * nregs,
            _ => (0.7213 / (1.0 + 1.079 / nregs)) * nregs * nregs,
        };
        let estimator = gamma_m_squared / sum;
        // 2^L, L = the bits a register can count (2^width - 2) plus log2m.
        let two_to_l = 2f64.powi(((1i32 << self.width) - 2) + self.log2m as i32);
        if zeros != 0 && estimator < 5.0 * nregs / 2.0 {
            nregs * (nregs / f64::from(zeros)).ln()
        } else if estimator <= two_to_l / 30.0 {
            estimator
        } else {
            -two_to_l * (1.0 - estimator / two_to_l).ln()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_sketches_are_refused() {
        assert!(Sketch::from_bytes(&[0x11]).is_err());
        // Storage version 2 does not exist.
        assert!(Sketch::from_bytes(&[0x21, 0x8e, 0x7f]).is_err());
        // An explicit body of 7 bytes, a full one too long, and 2^31 registers.
        assert!(Sketch::from_bytes(&[0x12, 0x8e, 0x7f, 0, 0, 0, 0, 0, 0, 1]).is_err());
        let mut long = vec![0x14, 0x8e, 0x7f];
        long.resize(3 + 10_241, 0);
        assert!(Sketch::from_bytes(&long).is_err());
        assert!(Sketch::from_bytes(&[0x11, 0x9f, 0x7f]).is_err());
    }

    #[test]
    fn sketches_as_the_extension_writes_them() {
        // hll_empty(14, 5) and hll_add(hll_empty(14, 5), hll_hash_bigint(1)).
        let empty = Sketch::from_bytes(&[0x11, 0x8e, 0x7f]).expect("parses");
        assert_eq!((empty.log2m, empty.width, empty.estimate()), (14, 5, 0.0));
        let one = Sketch::from_bytes(&[
            0x12, 0x8e, 0x7f, 0x00, 0x44, 0x03, 0xb7, 0xfb, 0x05, 0xc4, 0x4a,
        ])
        .expect("parses");
        assert_eq!(one.estimate(), 1.0);
        assert_eq!(one.union(&empty).expect("same shape").estimate(), 1.0);
    }
}
