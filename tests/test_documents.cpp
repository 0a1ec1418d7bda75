// data::DocumentReader: files, folders (recursive, globbed, sorted), JSONL records, gzip, and a
// clear error naming the file (and line) for every kind of bad input.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "data/documents.h"
#include "test_util.h"

namespace polysketch::test {
namespace {

namespace fs = std::filesystem;

std::string write(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const auto path = dir.file(name);
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string write_gz(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const auto path = dir.file(name);
  fs::create_directories(fs::path(path).parent_path());
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
  return path;
}

std::vector<data::Document> read_all(const data::DocumentSource& source) {
  data::DocumentReader reader(source);
  std::vector<data::Document> docs;
  data::Document d;
  while (reader.next(d)) docs.push_back(d);
  EXPECT_EQ(reader.bytes_read(), reader.total_bytes());
  return docs;
}

TEST(Documents, FilesFoldersJsonlAndGzipInAFixedOrder) {
  TempDir dir;
  write(dir, "corpus/b/two.txt", "second file\n");
  write(dir, "corpus/a.md", "# first\n");
  write(dir, "corpus/skip.bin", "not taken: no glob matches");
  write(dir, "corpus/empty.txt", " \n\n");  // no text: skipped
  write(dir, "corpus/records.jsonl", "{\"text\": \"record one\"}\n\n{\"text\": \"r\\u00e9cord two\", \"id\": 2}");
  write_gz(dir, "corpus/c/zipped.jsonl.gz", "{\"text\": \"zipped record\"}\n");
  write_gz(dir, "corpus/z.txt.gz", "zipped text\n");
  const auto extra = write(dir, "extra.data", "named files are taken whatever their name\n");
  const auto docs = read_all({{dir.file("corpus"), extra}, {}, "text"});
  std::vector<std::pair<std::string, std::string>> got;
  for (const auto& d : docs) got.emplace_back(fs::path(d.where).filename().string(), d.text);
  const std::vector<std::pair<std::string, std::string>> want{
      {"a.md", "# first\n"},
      {"two.txt", "second file\n"},
      {"zipped.jsonl.gz:1", "zipped record"},
      {"records.jsonl:1", "record one"},
      {"records.jsonl:3", "r\xc3\xa9" "cord two"},
      {"z.txt.gz", "zipped text\n"},
      {"extra.data", "named files are taken whatever their name\n"}};
  EXPECT_EQ(got, want);
  // --glob chooses the folder's files; --text-field the records' field.
  write(dir, "other/x.jsonl", "{\"body\": \"in body\"}\n");
  data::DocumentSource s{{dir.file("other")}, {"*.jsonl"}, "body"};
  const auto bodies = read_all(s);
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0].text, "in body");
}

TEST(Documents, BadInputsNameTheFileAndLine) {
  TempDir dir;
  auto fails = [&](const std::vector<std::string>& inputs, const std::string& needle,
                   const std::string& field = "text") {
    expect_error([&] { read_all({inputs, {}, field}); }, needle);
  };
  fails({dir.file("none.txt")}, "none.txt: cannot read");
  fails({write(dir, "b.txt", std::string("ab\0cd", 5))}, "b.txt: binary data (NUL byte");
  fails({write(dir, "u.txt", "ok \xc3\x28")}, "u.txt: invalid UTF-8 at byte offset 3");
  fails({write(dir, "o.txt", "ab\xc0\x80")}, "invalid UTF-8 at byte offset 2");
  fails({write(dir, "s.txt", "a\xed\xa0\x80")}, "invalid UTF-8 at byte offset 1");
  fails({write(dir, "c.txt", "abc\xe2\x82")}, "invalid UTF-8 at byte offset 3");
  fails({write(dir, "j.jsonl", "{\"text\": \"ok\"}\n{\"text\": 3}\n")}, "j.jsonl:2: expected a JSON object with a string field \"text\"");
  fails({write(dir, "k.jsonl", "{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n")}, "k.jsonl:3: expected");
  fails({write(dir, "l.jsonl", "{\"text\": \"ok\"}\n{broken\n")}, "l.jsonl:2: not valid JSON");
  fails({write(dir, "m.jsonl", "{\"text\": \"ok\"}\n")}, "m.jsonl:1: expected a JSON object with a string field \"body\"", "body");
  fails({write(dir, "n.jsonl", "[1, 2]\n")}, "n.jsonl:1: expected");
  // gzip: truncated, and not gzip at all
  std::string zipped;
  {
    const auto full = write_gz(dir, "full.txt.gz", std::string(20000, 'a') + "\n");
    std::ifstream in(full, std::ios::binary);
    zipped.assign(std::istreambuf_iterator<char>(in), {});
  }
  fails({write(dir, "cut.txt.gz", zipped.substr(0, zipped.size() / 2))}, "cut.txt.gz: broken gzip data");
  fails({write(dir, "fake.txt.gz", "plain text in disguise\n")}, "fake.txt.gz: broken gzip data");
  // Folders: nothing matching, a dangling entry.
  fs::create_directories(dir.file("nothing"));
  write(dir, "nothing/x.bin", "x");
  fails({dir.file("nothing")}, "no input files");
  fs::create_directories(dir.file("dangling"));
  fs::create_symlink(dir.file("gone.txt"), dir.file("dangling/link.txt"));
  fails({dir.file("dangling")}, "link.txt: cannot read");
}

}  // namespace
}  // namespace polysketch::test
