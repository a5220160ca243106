// Package file is an objectstore.Bucket in a local directory: key "a/b"
// is the file Root/a/b.
//
// Contract: it implements the objectstore contract in full, including
// conditional Put. Put writes the body to a temporary file in the key's
// directory, fsyncs it, then renames it over the key (or, for a conditional
// Put, hard-links it to the key, which fails if the key exists, so exactly
// one of racing conditional Puts wins) and fsyncs the directory, so a Put
// that returned is durable and readers never see a partial object.
// Directories that Put creates are fsynced into their parents; Delete
// removes directories it leaves empty. Temporary files start with
// ".silt-tmp-", never appear in List, and keys with a segment of that form
// are rejected with ErrInvalidKey, as are keys ValidateKey rejects.
//
// Unlike S3, a key cannot be both an object and a directory: with object
// "a" stored, Put of "a/b" fails with ErrInvalidKey (and vice versa), and
// Get of "a/b" fails with ErrNotExist.
//
// A missing Root makes every call fail with ErrBucketNotExist; New creates
// it when Config.Create is set. The store needs a file system with hard
// links and atomic rename (any local Linux file system).
package file
