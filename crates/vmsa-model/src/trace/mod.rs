//! Casemate traces (being written).
