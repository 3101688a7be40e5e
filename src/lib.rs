//! omnigate
