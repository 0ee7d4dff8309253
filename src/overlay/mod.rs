//! Union logic with no fuser types. See the module docs of each file.
