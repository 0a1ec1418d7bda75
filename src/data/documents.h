// Documents from the inputs `polysketch prepare` reads: files and folders (searched
// recursively), plain text (.txt, .md) and JSON lines (.jsonl: one document per record, its
// text in one field), each also gzip-compressed (.gz). One file or one record is one document.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace polysketch::data {

struct DocumentSource {
  std::vector<std::string> inputs;  // files (taken whatever their name) and folders
  // File names taken from folders (fnmatch patterns); empty: kDefaultGlobs.
  std::vector<std::string> globs;
  std::string text_field = "text";  // .jsonl: the field holding a record's text
};
inline const std::vector<std::string> kDefaultGlobs{"*.txt", "*.md", "*.jsonl",
                                                    "*.txt.gz", "*.md.gz", "*.jsonl.gz"};

struct Document {
  std::string text;   // valid UTF-8, no NUL bytes, not empty
  std::string where;  // "FILE" or "FILE:LINE" (a JSONL record)
};

// Reads the documents of a source in a fixed order (inputs in the order given, each folder's
// files sorted by path), one at a time: memory holds one file's buffer and one document.
class DocumentReader {
 public:
  // Lists the files; throws Error for a missing input, an unreadable folder or folder entry, or
  // a source with no file at all.
  explicit DocumentReader(const DocumentSource& source);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;

  const std::vector<std::string>& files() const { return files_; }
  uint64_t total_bytes() const { return total_bytes_; }  // of the files as stored (compressed)
  uint64_t bytes_read() const;                          // of those, read so far

  // The next document, false after the last. Empty files and blank JSONL lines are skipped.
  // Throws Error naming the file (and line): unreadable, broken gzip, binary (NUL bytes),
  // invalid UTF-8, a JSONL line that is not a JSON object with a string field `text_field`.
  bool next(Document& doc);

 private:
  struct Open;
  bool next_file();
  DocumentSource source_;
  std::vector<std::string> files_;
  std::vector<uint64_t> sizes_;  // of files_, as stored
  uint64_t total_bytes_ = 0, done_bytes_ = 0;
  size_t file_ = 0;
  std::unique_ptr<Open> open_;
};

}  // namespace polysketch::data
