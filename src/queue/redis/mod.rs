//! Redis backend of the queue.
