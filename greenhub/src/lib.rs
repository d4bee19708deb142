//! greenhub
