//! Node keys, the key file, and the Node annotation schema.
