#include "data/documents.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fnmatch.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>

#include "data/corpus.h"
#include "polysketch/error.h"

namespace polysketch::data {

namespace fs = std::filesystem;

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool is_jsonl(const std::string& path) { return ends_with(path, ".jsonl") || ends_with(path, ".jsonl.gz"); }

bool matches(const std::vector<std::string>& globs, const std::string& name) {
  for (const auto& g : globs.empty() ? kDefaultGlobs : globs)
    if (fnmatch(g.c_str(), name.c_str(), 0) == 0) return true;
  return false;
}

// The files of a folder matching the globs, sorted by path.
std::vector<std::string> folder_files(const std::string& dir, const std::vector<std::string>& globs) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  if (ec) throw Error(fmt::format("{}: cannot read the folder ({})", dir, ec.message()));
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error(fmt::format("{}: cannot read the folder ({})", dir, ec.message()));
    const auto& p = it->path();
    if (!matches(globs, p.filename().string())) continue;
    std::error_code st;
    if (it->is_directory(st)) continue;
    if (!it->is_regular_file(st))
      throw Error(fmt::format("{}: cannot read (not a regular file{})", p.string(),
                              st ? ": " + st.message() : ""));
    out.push_back(p.string());
  }
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

// One file being read: zlib reads plain and gzip files alike.
struct DocumentReader::Open {
  std::string path;
  gzFile gz = nullptr;
  bool jsonl = false;
  int64_t line = 0;
  std::string pending;  // JSONL: bytes read, of which those from `pos` on are not yet consumed
  size_t pos = 0;
  bool eof = false;
  ~Open() {
    if (gz) gzclose(gz);
  }
  // Appends up to 1 MiB to `out`; false at the end of the file.
  bool read_some(std::string& out) {
    if (eof) return false;
    char buf[1 << 16];
    for (int i = 0; i < 16; ++i) {
      const int n = gzread(gz, buf, sizeof buf);
      if (n < 0) {
        int code = 0;
        const char* msg = gzerror(gz, &code);
        if (code == Z_ERRNO) throw Error(fmt::format("{}: cannot read ({})", path, std::strerror(errno)));
        throw Error(fmt::format("{}: broken gzip data ({})", path, msg));
      }
      if (n == 0) {
        int code = 0;
        const char* msg = gzerror(gz, &code);
        if (code != Z_OK && code != Z_STREAM_END)
          throw Error(fmt::format("{}: broken gzip data ({})", path, msg));
        eof = true;
        return !out.empty();
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
};

DocumentReader::DocumentReader(const DocumentSource& source) : source_(source) {
  for (const auto& input : source.inputs) {
    std::error_code ec;
    const auto status = fs::status(input, ec);
    if (ec || !fs::exists(status))
      throw Error(fmt::format("{}: cannot read (no such file or folder)", input));
    if (fs::is_directory(status)) {
      const auto found = folder_files(input, source.globs);
      files_.insert(files_.end(), found.begin(), found.end());
    } else {
      files_.push_back(input);
    }
  }
  if (files_.empty())
    throw Error(fmt::format("no input files (the folders hold no file matching {})",
                            fmt::join(source.globs.empty() ? kDefaultGlobs : source.globs, ", ")));
  for (const auto& f : files_) {
    std::error_code ec;
    sizes_.push_back(fs::file_size(f, ec));
    if (ec) throw Error(fmt::format("{}: cannot read ({})", f, ec.message()));
    total_bytes_ += sizes_.back();
  }
}

DocumentReader::~DocumentReader() = default;

uint64_t DocumentReader::bytes_read() const {
  return done_bytes_ + (open_ ? static_cast<uint64_t>(std::max<z_off_t>(0, gzoffset(open_->gz))) : 0);
}

bool DocumentReader::next_file() {
  if (open_) {
    done_bytes_ += sizes_[file_ - 1];
    open_.reset();
  }
  if (file_ == files_.size()) return false;
  auto o = std::make_unique<Open>();
  o->path = files_[file_++];
  o->jsonl = is_jsonl(o->path);
  o->gz = gzopen(o->path.c_str(), "rb");
  if (!o->gz) throw Error(fmt::format("{}: cannot read ({})", o->path, std::strerror(errno)));
  gzbuffer(o->gz, 1 << 17);
  if (ends_with(o->path, ".gz") && gzdirect(o->gz))
    throw Error(fmt::format("{}: broken gzip data (not in gzip format)", o->path));
  open_ = std::move(o);
  return true;
}

bool DocumentReader::next(Document& doc) {
  for (;;) {
    if (!open_ && !next_file()) return false;
    auto& o = *open_;
    if (!o.jsonl) {  // the whole file is one document
      doc.text.clear();
      while (o.read_some(doc.text)) {
      }
      doc.where = o.path;
      next_file();
      if (doc.text.find_first_not_of(" \t\r\n") == std::string::npos) continue;  // empty
      check_utf8(doc.text, doc.where);
      return true;
    }
    // JSONL: the next non-blank line
    size_t nl;
    while ((nl = o.pending.find('\n', o.pos)) == std::string::npos) {
      o.pending.erase(0, o.pos);  // keep only the unread bytes: one line's worth
      o.pos = 0;
      if (!o.read_some(o.pending)) break;
    }
    if (nl == std::string::npos && o.pending.size() == o.pos) {
      next_file();
      continue;
    }
    const size_t end = nl == std::string::npos ? o.pending.size() : nl;
    const std::string line = o.pending.substr(o.pos, end - o.pos);
    o.pos = nl == std::string::npos ? o.pending.size() : nl + 1;
    ++o.line;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    doc.where = fmt::format("{}:{}", o.path, o.line);
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) throw Error(fmt::format("{}: not valid JSON", doc.where));
    if (!j.is_object() || !j.contains(source_.text_field) || !j.at(source_.text_field).is_string())
      throw Error(fmt::format("{}: expected a JSON object with a string field \"{}\" (--text-field)",
                              doc.where, source_.text_field));
    doc.text = j.at(source_.text_field).get<std::string>();
    if (doc.text.find_first_not_of(" \t\r\n") == std::string::npos) continue;  // empty
    check_utf8(doc.text, doc.where);
    return true;
  }
}

}  // namespace polysketch::data
