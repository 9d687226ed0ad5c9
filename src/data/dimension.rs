//! Hofstede's six cultural dimensions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of Hofstede's six dimensions, in the canonical order PDI IDV MAS UAI LTO IVR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Dimension {
    /// Power distance.
    Pdi,
    /// Individualism.
    Idv,
    /// Masculinity.
    Mas,
    /// Uncertainty avoidance.
    Uai,
    /// Long-term orientation.
    Lto,
    /// Indulgence versus restraint.
    Ivr,
}

impl Dimension {
    /// All six, in canonical order.
    pub const ALL: [Dimension; 6] =
        [Dimension::Pdi, Dimension::Idv, Dimension::Mas, Dimension::Uai, Dimension::Lto, Dimension::Ivr];

    /// Position in [`Dimension::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Upper-case code, e.g. `PDI`.
    pub fn code(self) -> &'static str {
        match self {
            Dimension::Pdi => "PDI",
            Dimension::Idv => "IDV",
            Dimension::Mas => "MAS",
            Dimension::Uai => "UAI",
            Dimension::Lto => "LTO",
            Dimension::Ivr => "IVR",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Dimension {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        Dimension::ALL
            .into_iter()
            .find(|d| d.code() == up)
            .ok_or_else(|| format!("unknown dimension '{s}' (expected one of PDI IDV MAS UAI LTO IVR)"))
    }
}

/// A value per dimension, some possibly missing.
pub type DimVec = [Option<f64>; 6];
