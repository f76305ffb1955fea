//! Text printer and DOT (to be written).
