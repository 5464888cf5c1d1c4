// One storage suite, run against every filesystem (as Arrow's arrow/filesystem/test_util.h): the
// same cases on a fresh local temp dir and on a fresh prefix of a real S3 server. The S3 run
// needs ORCHARD_TEST_S3=s3://bucket/prefix and the server's AWS_* environment;
// tests/unit_with_s3.py starts SeaweedFS on loopback and sets both (ctest -R '^unit$'). Without
// it the "s3" cases are skipped, or fail when ORCHARD_REQUIRE_S3=1. ORCHARD_TEST_S3_MANY may name
// a prefix holding 1,100 objects 000000 ... 001099 (the launcher puts them with boto3).
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

#include "orchard/error.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/storage/storage.hpp"

namespace st = orchard::storage;
namespace ly = orchard::layout;
using orchard::Error;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Sets (or unsets, with nullopt) an environment variable for the lifetime of this object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value->c_str(), 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Deterministic bytes of every value (zeros and 0xff included), so a wrong offset shows.
std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  std::uint32_t x = seed * 2654435761u + 1;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

std::string str(const std::shared_ptr<arrow::Buffer>& b) { return b->ToString(); }

std::string base_name(const std::string& name) { return name.substr(name.rfind('/') + 1); }

// The label of a listed image: its parent folder's name.
std::string label_of(const std::string& name) {
  const auto slash = name.rfind('/');
  return base_name(name.substr(0, slash));
}

// Runs f, which must throw orchard::Error; returns it (a failure when f returned or threw else).
std::optional<Error> error_from(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a " << typeid(e).name() << ", not orchard::Error: " << e.what();
    return std::nullopt;
  }
  ADD_FAILURE() << "did not throw";
  return std::nullopt;
}

// Lowers this thread's effective CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (capabilities belong to
// a thread on Linux), so permission bits bind even when the tests run as root.
void drop_dac_override() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &hdr, caps) != 0) return;
  for (const int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH}) caps[CAP_TO_INDEX(cap)].effective &= ~CAP_TO_MASK(cap);
  (void)::syscall(SYS_capset, &hdr, caps);
}

// A 127.0.0.1 port that refuses every connection: bound, never listening, held while it lives.
class RefusingPort {
 public:
  RefusingPort() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("cannot bind a port on 127.0.0.1");
    port_ = ntohs(a.sin_port);
  }
  ~RefusingPort() { ::close(fd_); }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;
  int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

// Finalizes S3 after the last test, as main() does (Arrow requires it before exit).
class StorageEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { st::shutdown(); }
};
const auto* const kStorageEnvironment = ::testing::AddGlobalTestEnvironment(new StorageEnvironment);

constexpr int kMany = 1100;  // more than one ListObjectsV2 page (1,000 keys)

std::string many_name(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%06d", i);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// The fixture: root_ is a fresh, empty folder of the filesystem named by the parameter.

class StorageTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "local") {
      std::string tmpl = (std::filesystem::temp_directory_path() / "orchard-storage-XXXXXX").string();
      ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << "mkdtemp " << tmpl;
      local_dir_ = tmpl;
      root_ = st::open(local_dir_);
      return;
    }
    ASSERT_EQ(GetParam(), "s3");
    const std::string base = env("ORCHARD_TEST_S3");
    if (base.empty()) {
      if (env("ORCHARD_REQUIRE_S3") == "1")
        FAIL() << "ORCHARD_REQUIRE_S3=1 but ORCHARD_TEST_S3 is not set: run the S3 cases through "
                  "tests/unit_with_s3.py (ctest -R '^unit$'), which starts SeaweedFS and sets "
                  "ORCHARD_TEST_S3=s3://bucket/prefix and the AWS_* variables";
      GTEST_SKIP() << "no S3 store: set ORCHARD_TEST_S3=s3://bucket/prefix (and the AWS_* "
                      "environment), or run through tests/unit_with_s3.py";
    }
    ASSERT_EQ(base.rfind("s3://", 0), 0u) << "ORCHARD_TEST_S3 must be s3://bucket/prefix, not " << base;
    static std::atomic<int> counter{0};
    std::string sub = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (char& c : sub)
      if (c == '/') c = '_';
    sub += "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    root_ = st::open(base + "/" + sub);
    ASSERT_TRUE(st::list_dir(root_).empty()) << root_.display() << " is not fresh";
  }

  void TearDown() override {
    if (!local_dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(local_dir_, ec);
    } else if (root_.fs && root_.object_store()) {
      (void)root_.fs->DeleteDirContents(root_.path, /*missing_dir_ok=*/true);
    }
  }

  bool s3() const { return GetParam() == "s3"; }

  // root_/rel with text in it, its folders made first as Orchard's writers do.
  st::Location put(const std::string& rel, const std::string& text) {
    const st::Location file = root_.child(rel);
    if (const auto slash = rel.rfind('/'); slash != std::string::npos) st::make_dirs(root_.child(rel.substr(0, slash)));
    st::write_text(file, text);
    return file;
  }

  // The base names list_dir gives for folder, in its order.
  static std::vector<std::string> names_in(const st::Location& folder) {
    std::vector<std::string> out;
    for (const auto& f : st::list_dir(folder)) out.push_back(f.base_name());
    return out;
  }

  st::Location root_;
  std::string local_dir_;  // the temp dir of the local case
};

INSTANTIATE_TEST_SUITE_P(Fs, StorageTest, ::testing::Values("local", "s3"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

// ---------------------------------------------------------------------------------------------

TEST_P(StorageTest, WriteAtomicThenReadFileRoundTrip) {
  st::make_dirs(root_.child("parts"));
  // Small (one PUT on S3) and larger than a multipart part (Arrow uploads 10 MB parts).
  for (const std::size_t n : {std::size_t{1}, std::size_t{70'000}, std::size_t{12} << 20}) {
    SCOPED_TRACE("size " + std::to_string(n));
    const std::string data = pattern(n, static_cast<unsigned>(n));
    const auto file = root_.child("parts").child(ly::part_name(static_cast<int>(n % 100000)));
    st::write_atomic(file, [&](const auto& out) {
      // in pieces, and nothing is visible under the final name until the write is whole
      const std::size_t half = n / 2;
      st::check(out->Write(data.data(), static_cast<std::int64_t>(half)), "first half");
      EXPECT_FALSE(st::exists(file)) << "a reader could see half of " << file.display();
      st::check(out->Write(data.data() + half, static_cast<std::int64_t>(n - half)), "second half");
    });
    EXPECT_TRUE(st::exists(file));
    const auto whole = st::read_file(file);
    ASSERT_EQ(whole->size(), static_cast<std::int64_t>(n));
    EXPECT_TRUE(str(whole) == data) << "content differs";
    const auto hinted = st::read_file(file, static_cast<std::int64_t>(n));  // size from a listing
    ASSERT_EQ(hinted->size(), static_cast<std::int64_t>(n));
    EXPECT_TRUE(str(hinted) == data) << "content differs with the size hint";
  }
  // Rewriting replaces the whole content; the old one stays readable until the new one is whole.
  const auto file = root_.child("parts").child("again.bin");
  st::write_text(file, "old content, longer than the new one");
  st::write_atomic(file, [&](const auto& out) {
    st::check(out->Write(std::string("new")), "write");
    EXPECT_EQ(str(st::read_file(file)), "old content, longer than the new one");
  });
  EXPECT_EQ(str(st::read_file(file)), "new");
  EXPECT_EQ(str(st::read_file(file, 3)), "new");
  EXPECT_EQ(names_in(root_.child("parts")),
            (std::vector<std::string>{"again.bin", "part-00001.parquet", "part-70000.parquet",
                                      ly::part_name((12 << 20) % 100000)}))
      << "no temporary may be left beside the parts";
}

TEST_P(StorageTest, WriteText) {
  const auto a = put("a.json", "{\"images\": 3}\n");
  const auto empty = put("empty.txt", "");
  const std::string bytes("nul\0inside\xff", 11);
  const auto b = put("sub/b.bin", bytes);
  EXPECT_EQ(str(st::read_file(a)), "{\"images\": 3}\n");
  EXPECT_EQ(str(st::read_file(empty)), "");
  EXPECT_EQ(str(st::read_file(empty, 0)), "");
  EXPECT_EQ(str(st::read_file(b)), bytes);
  EXPECT_TRUE(st::exists(empty));
  const auto all = st::list_files(root_, "*");
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].name, a.display());
  EXPECT_EQ(all[0].size, 14);
  EXPECT_EQ(all[1].name, empty.display());
  EXPECT_EQ(all[1].size, 0);
  EXPECT_EQ(all[2].name, b.display());
  EXPECT_EQ(all[2].size, 11);
}

TEST_P(StorageTest, ListFilesGlobOverNestedFolders) {
  put("tree/Apple Braeburn/r_1_100.jpg", "a1");
  put("tree/Apple Braeburn/0_100.jpg", "a0");
  put("tree/Apple Braeburn/notes.txt", "not an image");
  put("tree/Banana/UPPER.JPG", "case-sensitive: not *.jpg");
  put("tree/Banana/b.jpg", "b");
  put("tree/deep/er/still/c.jpg", "c");
  put("tree/top.jpg", "top");
  put("tree/.hidden.jpg", "dot");
  put("tree2/x.jpg", "a sibling prefix, not under tree");
  put("tre.jpg", "beside tree");
  const auto tree = root_.child("tree");

  const auto jpgs = st::list_files(tree, "*.jpg");
  std::vector<std::string> names, labels;
  for (const auto& f : jpgs) names.push_back(f.name), labels.push_back(label_of(f.name));
  const std::string t = tree.display();
  EXPECT_EQ(names, (std::vector<std::string>{t + "/.hidden.jpg", t + "/Apple Braeburn/0_100.jpg",
                                             t + "/Apple Braeburn/r_1_100.jpg", t + "/Banana/b.jpg",
                                             t + "/deep/er/still/c.jpg", t + "/top.jpg"}));
  EXPECT_EQ(labels, (std::vector<std::string>{"tree", "Apple Braeburn", "Apple Braeburn", "Banana", "still", "tree"}));
  // Every listed name opens, through at(), to the bytes written there, with the listed size.
  for (const auto& f : jpgs) {
    const auto loc = tree.at(f.name);
    const auto buf = st::read_file(loc, f.size);
    EXPECT_EQ(buf->size(), f.size) << f.name;
    EXPECT_EQ(str(st::read_file(loc)), str(buf)) << f.name;
  }
  EXPECT_EQ(str(st::read_file(tree.at(t + "/Banana/b.jpg"))), "b");

  EXPECT_EQ(st::list_files(tree, "*").size(), 8u);
  EXPECT_EQ(st::list_files(tree, "*.JPG").size(), 1u);
  EXPECT_EQ(st::list_files(tree, "*.png").size(), 0u);
  const auto r = st::list_files(tree, "r_*_100.jpg");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].name, t + "/Apple Braeburn/r_1_100.jpg");
  EXPECT_EQ(r[0].size, 2);
  // The glob applies to the file name, not the path.
  EXPECT_EQ(st::list_files(tree, "Banana*").size(), 0u);
  // A prefix is a folder, not a string prefix: tree2/ and tre.jpg are not under tree.
  EXPECT_FALSE(st::exists(root_.child("tre")));
  EXPECT_EQ(st::list_files(root_, "*").size(), 10u);
}

TEST_P(StorageTest, ListFilesOfMissingOrFileRootThrows) {
  put("file.jpg", "x");
  for (const auto& bad : {root_.child("missing"), root_.child("file.jpg")}) {
    const auto e = error_from([&] { st::list_files(bad, "*"); });
    ASSERT_TRUE(e);
    EXPECT_FALSE(e->is_storage()) << "certain, not a store failure: " << e->what();
    EXPECT_NE(std::string(e->what()).find(bad.display()), std::string::npos) << e->what();
  }
}

TEST_P(StorageTest, ListMoreThanAThousandObjects) {
  const auto t0 = std::chrono::steady_clock::now();
  st::Location many = root_.child("many");
  if (s3() && !env("ORCHARD_TEST_S3_MANY").empty()) {
    many = st::open(env("ORCHARD_TEST_S3_MANY"));  // put by the launcher (boto3)
  } else {
    st::make_dirs(many);
    std::atomic<int> next{0};
    std::vector<std::thread> threads;
    std::exception_ptr err;
    std::mutex mu;
    for (int t = 0; t < (s3() ? 16 : 1); ++t)
      threads.emplace_back([&] {
        try {
          for (int i; (i = next++) < kMany;) st::write_text(many.child(many_name(i)), "x");
        } catch (...) {
          std::lock_guard lock(mu);
          err = std::current_exception();
        }
      });
    for (auto& th : threads) th.join();
    if (err) std::rethrow_exception(err);
  }
  const double made_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const auto all = st::list_files(many, "*");
  ASSERT_EQ(all.size(), static_cast<std::size_t>(kMany)) << "a listing must follow every page";
  for (int i = 0; i < kMany; ++i) {
    ASSERT_EQ(all[i].name, many.display() + "/" + many_name(i)) << "sorted, each once";
    ASSERT_EQ(all[i].size, 1);
  }
  // Globs apply across pages: names ending in 7 (110), and the last 100 (beyond the first page).
  const auto sevens = st::list_files(many, "*7");
  ASSERT_EQ(sevens.size(), 110u);
  EXPECT_EQ(base_name(sevens.front().name), "000007");
  EXPECT_EQ(base_name(sevens.back().name), "001097");
  const auto tail = st::list_files(many, "0010??");
  ASSERT_EQ(tail.size(), 100u);
  EXPECT_EQ(base_name(tail.front().name), "001000");
  EXPECT_EQ(base_name(tail.back().name), "001099");
  EXPECT_EQ(st::list_dir(many).size(), static_cast<std::size_t>(kMany));
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  %d objects made in %.2f s, listed 4 times in %.2f s\n", kMany, made_s, total_s - made_s);
}

TEST_P(StorageTest, AbortedWriteLeavesNothing) {
  const auto dir = root_.child("features");
  st::make_dirs(dir);
  st::write_text(dir.child("part-00000.parquet"), "shard 0");
  // Small (never sent on S3) and past a multipart part (an upload in progress, to be aborted).
  for (const std::size_t n : {std::size_t{100}, std::size_t{12} << 20}) {
    SCOPED_TRACE("written before the failure: " + std::to_string(n));
    const auto file = dir.child("part-00001.parquet");
    int calls = 0;
    try {
      st::write_atomic(file, [&](const auto& out) {
        ++calls;
        st::check(out->Write(pattern(n, 1)), "write");
        throw std::runtime_error("encoder failed");
      });
      ADD_FAILURE() << "the callback's exception did not propagate";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "encoder failed");
    }
    EXPECT_EQ(calls, 1) << "a failure of the caller's own is not retried";
    EXPECT_FALSE(st::exists(file));
    const auto e = error_from([&] { st::read_file(file); });
    ASSERT_TRUE(e);
    EXPECT_TRUE(e->is_not_found()) << e->what();
    EXPECT_EQ(names_in(dir), std::vector<std::string>{"part-00000.parquet"}) << "no temporary may be left";
  }
  // An aborted rewrite keeps the old content whole.
  const auto old = dir.child("part-00000.parquet");
  EXPECT_THROW(st::write_atomic(old,
                                [&](const auto& out) {
                                  st::check(out->Write(std::string("half of a new")), "write");
                                  throw std::runtime_error("interrupted");
                                }),
               std::runtime_error);
  EXPECT_EQ(str(st::read_file(old)), "shard 0");
  EXPECT_EQ(names_in(dir), std::vector<std::string>{"part-00000.parquet"});
  const auto files = st::list_files(root_, "*");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].name, old.display());
}

TEST_P(StorageTest, FailedCommitLeavesNoTemporary) {
  // A folder where the file should go: a local rename onto it fails. (An object store has no
  // folders, so there the PUT may succeed.) Either way no temporary may be left behind.
  put("out/part-00003.parquet/inner.txt", "x");
  const auto target = root_.child("out/part-00003.parquet");
  bool threw = false;
  {
    ScopedEnv attempts("ORCHARD_STORAGE_ATTEMPTS", "2");
    try {
      st::write_text(target, "data");
    } catch (const Error& e) {
      threw = true;
      EXPECT_NE(std::string(e.what()).find(target.display()), std::string::npos) << e.what();
    }
  }
  if (!root_.object_store()) {
    EXPECT_TRUE(threw) << "a rename onto a folder cannot succeed";
  } else if (!threw) {
    EXPECT_EQ(str(st::read_file(target)), "data") << "a PUT that succeeded published the whole content";
  } else {
    for (const auto& f : st::list_dir(root_.child("out")))
      EXPECT_FALSE(f.IsFile() && f.base_name() == "part-00003.parquet") << "a failed PUT published nothing";
  }
  for (const auto& name : names_in(root_.child("out")))
    EXPECT_FALSE(ly::is_temporary(name)) << "temporary left behind: " << name;
  EXPECT_EQ(str(st::read_file(root_.child("out/part-00003.parquet/inner.txt"))), "x");
}

TEST_P(StorageTest, ExistsTrueAndFalse) {
  const auto file = put("Apple/1.jpg", "jpeg");
  EXPECT_TRUE(st::exists(file));
  EXPECT_TRUE(st::exists(root_.child("Apple"))) << "a folder (a prefix with objects) exists";
  EXPECT_FALSE(st::exists(root_.child("Apple/2.jpg")));
  EXPECT_FALSE(st::exists(root_.child("App"))) << "a string prefix of a folder is not one";
  EXPECT_FALSE(st::exists(root_.child("Apple/1.jp")));
  EXPECT_FALSE(st::exists(root_.child("no/such/folder/x")));
  EXPECT_FALSE(st::exists(root_.child("Apple/1.jpg/under-a-file"))) << "certainly absent";
  st::remove(file);
  EXPECT_FALSE(st::exists(file));
}

TEST_P(StorageTest, CouldNotCheckIsNotAbsent) {
  ScopedEnv attempts("ORCHARD_STORAGE_ATTEMPTS", "1");  // retries add nothing here but time
  put("here.jpg", "x");
  std::vector<std::pair<std::string, st::Location>> unreachable;
  std::optional<RefusingPort> refusing;
  if (s3()) {
    const std::string rest = root_.display().substr(5);  // bucket/prefix
    {
      // A store that does not answer: the endpoint refuses connections. Other keys give another
      // S3FileSystem (one is cached per access key), made while the endpoint is the refusing one.
      refusing.emplace();
      ScopedEnv endpoint("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:" + std::to_string(refusing->port()));
      unreachable.emplace_back("store not answering", st::open("s3://AKIAUNREACHABLE:s3cr3tUnreachable@" + rest));
    }
    // The real server, with keys it does not know (a secret with a raw '/'): access denied.
    unreachable.emplace_back("wrong keys", st::open("s3://AKIAWRONGKEY:s3cr3t/Wrong+Key@" + rest));
  } else {
    // A folder without permission (binding root too: the probes run without CAP_DAC_OVERRIDE).
    put("locked/here.jpg", "x");
    ASSERT_EQ(::chmod(root_.child("locked").path.c_str(), 0), 0);
    unreachable.emplace_back("no permission", root_.child("locked"));
  }
  struct Probe {
    std::string what;
    st::Location named;
    std::function<void()> f;
    std::optional<Error> error;
    std::string wrong;  // how it failed to throw orchard::Error
  };
  std::vector<Probe> probes;
  for (const auto& [why, base] : unreachable) {
    const auto here = base.child("here.jpg"), absent = base.child("absent.jpg"), made = base.child("new.jpg");
    const auto add = [&, why = why](const char* what, const st::Location& named, std::function<void()> f) {
      probes.push_back({why + ": " + what, named, std::move(f), std::nullopt, ""});
    };
    add("exists", here, [=] { (void)st::exists(here); });
    add("exists of an absent one", absent, [=] { (void)st::exists(absent); });
    add("read_file", here, [=] { st::read_file(here); });
    add("read_file, size hint", here, [=] { st::read_file(here, 1); });
    add("list_files", base, [=] { st::list_files(base, "*"); });
    add("list_dir", base, [=] { st::list_dir(base); });
    add("write_text", made, [=] { st::write_text(made, "x"); });
  }
  // All at once: a store that does not answer costs the SDK's own retries (seconds) per call.
  std::vector<std::thread> threads;
  for (auto& p : probes)
    threads.emplace_back([&p] {
      drop_dac_override();
      try {
        p.f();
        p.wrong = "returned instead of throwing";
      } catch (const Error& e) {
        p.error = e;
      } catch (const std::exception& e) {
        p.wrong = std::string("threw a ") + typeid(e).name() + ", not orchard::Error: " + e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& p : probes) {
    SCOPED_TRACE(p.what);
    ASSERT_TRUE(p.error) << p.wrong;
    const std::string m = p.error->what();
    EXPECT_TRUE(p.error->is_storage()) << "a failed check, not \"absent\": " << m;
    EXPECT_NE(m.find(p.named.display()), std::string::npos) << "names the object: " << m;
    EXPECT_EQ(m.find("s3cr3t"), std::string::npos) << "leaks the secret: " << m;
    EXPECT_EQ(m.find("AKIA"), std::string::npos) << "leaks the access key: " << m;
  }
  if (!s3()) ::chmod(root_.child("locked").path.c_str(), 0755);
  EXPECT_TRUE(st::exists(root_.child("here.jpg"))) << "the store itself still answers";
  EXPECT_FALSE(st::exists(root_.child("new.jpg")));
}

TEST_P(StorageTest, ReadMissingIsNotFound) {
  put("present.jpg", "x");
  for (const auto& missing : {root_.child("absent.jpg"), root_.child("no/such/folder/x.jpg")}) {
    for (const std::int64_t hint : {std::int64_t{-1}, std::int64_t{5}, std::int64_t{5000}}) {
      SCOPED_TRACE(missing.display() + " size hint " + std::to_string(hint));
      const auto t0 = std::chrono::steady_clock::now();
      const auto e = error_from([&] { st::read_file(missing, hint); });
      ASSERT_TRUE(e);
      EXPECT_TRUE(e->is_not_found()) << e->what();
      EXPECT_NE(std::string(e->what()).find(missing.display()), std::string::npos) << e->what();
      EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0)
          << "a missing file is not retried";
    }
  }
}

TEST_P(StorageTest, RemoveMissingIsFine) {
  const auto file = put("f.txt", "x");
  EXPECT_NO_THROW(st::remove(root_.child("never-there.txt")));
  EXPECT_NO_THROW(st::remove(root_.child("no/such/folder/f.txt")));
  st::remove(file);
  EXPECT_FALSE(st::exists(file));
  EXPECT_NO_THROW(st::remove(file)) << "removing twice";
  EXPECT_TRUE(st::list_files(root_, "*").empty());
}

TEST_P(StorageTest, ListDir) {
  EXPECT_TRUE(st::list_dir(root_.child("missing")).empty());
  EXPECT_TRUE(st::list_dir(root_.child("no/such/folder")).empty());
  put("d/b.txt", "bb");
  put("d/a.txt", "a");
  put("d/sub/c.txt", "c");
  put("d2/z.txt", "z");
  const auto d = st::list_dir(root_.child("d"));
  ASSERT_EQ(d.size(), 3u) << "direct children only";
  EXPECT_EQ(d[0].base_name(), "a.txt");
  EXPECT_EQ(d[0].type(), arrow::fs::FileType::File);
  EXPECT_EQ(d[0].size(), 1);
  EXPECT_EQ(d[1].base_name(), "b.txt");
  EXPECT_EQ(d[1].size(), 2);
  EXPECT_EQ(d[2].base_name(), "sub");
  EXPECT_EQ(d[2].type(), arrow::fs::FileType::Directory);
  EXPECT_EQ(d[0].path(), root_.child("d/a.txt").path);
}

TEST_P(StorageTest, LocationNames) {
  const std::string d = root_.display();
  if (s3()) {
    std::string base = env("ORCHARD_TEST_S3");
    while (base.back() == '/') base.pop_back();
    EXPECT_EQ(d.rfind(base + "/", 0), 0u) << d << " is under " << base;
    EXPECT_EQ(d.substr(5), root_.path) << "path is bucket/key";
    EXPECT_EQ(root_.uri(), d);
    EXPECT_TRUE(root_.object_store());
    EXPECT_EQ(root_.scheme, "s3");
  } else {
    EXPECT_EQ(d, std::filesystem::path(local_dir_).lexically_normal().string());
    EXPECT_EQ(root_.path, d);
    EXPECT_EQ(root_.uri(), "file://" + d);
    EXPECT_FALSE(root_.object_store());
    EXPECT_EQ(root_.scheme, "");
  }
  const auto c = root_.child("Apple Red/r_1.jpg");
  EXPECT_EQ(c.display(), d + "/Apple Red/r_1.jpg");
  EXPECT_EQ(c.fs, root_.fs);
  // at() takes back what display() gave; open() what uri() gave (the manifest's round trip).
  const auto back = root_.at(c.display());
  EXPECT_EQ(back.path, c.path);
  EXPECT_EQ(back.fs, root_.fs);
  EXPECT_EQ(back.scheme, root_.scheme);
  const auto reopened = st::open(c.uri());
  EXPECT_EQ(reopened.path, c.path);
  EXPECT_EQ(reopened.scheme, c.scheme);
  EXPECT_EQ(reopened.fs, root_.fs) << "one filesystem per store and keys";
  EXPECT_EQ(st::open(d + "/").path, root_.path) << "a trailing slash is the same location";
  put("Apple Red/r_1.jpg", "written through child()");
  EXPECT_EQ(str(st::read_file(back)), "written through child()");
  EXPECT_EQ(str(st::read_file(reopened)), "written through child()");
}

// ---------------------------------------------------------------------------------------------
// Names and secrets, no store needed.

TEST(StorageNames, LocalPathsAndFileUris) {
  const auto cwd = std::filesystem::current_path().string();
  EXPECT_EQ(st::open("rel/x.jpg").path, cwd + "/rel/x.jpg");
  EXPECT_EQ(st::open("/tmp/a/../b/").path, "/tmp/b");
  EXPECT_EQ(st::open("file:///tmp/a/b").path, "/tmp/a/b");
  EXPECT_EQ(st::open("file:///tmp/a/b").uri(), "file:///tmp/a/b");
  EXPECT_EQ(st::open("/tmp/a").display(), "/tmp/a");
  EXPECT_EQ(st::open("/").path, "/");
  EXPECT_EQ(st::open("/tmp/a").child("b").child("c.jpg").display(), "/tmp/a/b/c.jpg");
  EXPECT_EQ(st::open("/").child("c.jpg").display(), "/c.jpg");
  EXPECT_FALSE(st::open("/tmp").object_store());
  for (const std::string bad : {"gs://bucket/x", "hdfs://user:pAssw0rd@namenode/x"}) {
    const auto e = error_from([&] { st::open(bad); });
    ASSERT_TRUE(e);
    const std::string m = e->what();
    EXPECT_NE(m.find("unsupported"), std::string::npos) << m;
    EXPECT_EQ(m.find("pAssw0rd"), std::string::npos) << "leaks: " << m;
  }
}

TEST(StorageNames, S3UriWithoutRegionSaysWhatToSet) {
  // No region set, a store that does not answer (nothing listens on port 1), off EC2: nothing
  // can tell the bucket's region.
  ScopedEnv r1("AWS_REGION", std::nullopt), r2("AWS_DEFAULT_REGION", std::nullopt);
  ScopedEnv cfg("AWS_CONFIG_FILE", "/nonexistent/aws-config");
  ScopedEnv endpoint("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1"), imds("AWS_EC2_METADATA_DISABLED", "true");
  const auto e = error_from([] { st::open("s3://AKIANOREGION:n0R3gionS3cret@some-bucket/x"); });
  ASSERT_TRUE(e);
  const std::string m = e->what();
  EXPECT_NE(m.find("AWS_REGION"), std::string::npos) << m;
  EXPECT_EQ(m.find("n0R3gionS3cret"), std::string::npos) << "leaks: " << m;
  EXPECT_EQ(st::scrub("cannot read with n0R3gionS3cret"), "cannot read with ***")
      << "a secret given in a URI is scrubbed from then on";
  const auto slash = error_from([] { st::open("s3://AKIANOREGION:wJalr/K7MDENG+bPxSlash@some-bucket/x"); });
  ASSERT_TRUE(slash);
  EXPECT_EQ(std::string(slash->what()).find("wJalr"), std::string::npos) << "leaks: " << slash->what();
  EXPECT_NE(std::string(slash->what()).find("s3://some-bucket"), std::string::npos) << slash->what();
  const auto no_secret = error_from([] { st::open("s3://AKIAONLY@some-bucket/x"); });
  ASSERT_TRUE(no_secret);
  EXPECT_EQ(std::string(no_secret->what()).find("AKIAONLY"), std::string::npos) << no_secret->what();
  EXPECT_TRUE(error_from([] { st::open("s3:///key-without-bucket"); }));
}

TEST(StorageNames, RedactAndScrub) {
  EXPECT_EQ(st::redact("s3://AKIAXYZ:sEcReT+key@bucket/pre/fix"), "s3://***@bucket/pre/fix");
  EXPECT_EQ(st::redact("s3://AKIAXYZ:sEcReT%2Fkey@bucket"), "s3://***@bucket");
  EXPECT_EQ(st::redact("s3://bucket/pre/fix"), "s3://bucket/pre/fix");
  // AWS secrets often hold '/' and '+': given raw in a URI they are hidden all the same.
  EXPECT_EQ(st::redact("s3://AKIAXYZ:wJalr/K7MDENG+bPx@bucket/key"), "s3://***@bucket/key");
  EXPECT_EQ(st::redact("s3://AKIAXYZ:/a/b/@bucket"), "s3://***@bucket");
  EXPECT_EQ(st::redact("s3://bucket/a:b@c"), "s3://bucket/a:b@c");
  EXPECT_EQ(st::redact("s3://bucket/user@example.com/x.jpg"), "s3://bucket/user@example.com/x.jpg")
      << "an @ in a key is not userinfo";
  EXPECT_EQ(st::redact("/data/in/a@b.jpg"), "/data/in/a@b.jpg");
  EXPECT_EQ(st::redact("cannot read s3://K:S3CR3T@b/x: timeout"), "cannot read s3://***@b/x: timeout");
  {
    ScopedEnv secret("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    ScopedEnv token("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLETOKEN");
    const std::string m = st::scrub(
        "signature for wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY did not match (token FwoGZXIvYXdzEXAMPLETOKEN, "
        "again wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY)");
    EXPECT_EQ(m, "signature for *** did not match (token ***, again ***)");
    EXPECT_EQ(st::scrub("nothing secret here"), "nothing secret here");
  }
  {
    ScopedEnv secret("AWS_SECRET_ACCESS_KEY", std::nullopt);
    ScopedEnv token("AWS_SESSION_TOKEN", std::nullopt);
    EXPECT_EQ(st::scrub("plain text"), "plain text");
  }
}

TEST(StorageNames, CheckGivesTheKind) {
  const auto nf = error_from([] { st::check(arrow::Status::IOError("Path does not exist 'b/x'"), "reading s3://b/x"); });
  ASSERT_TRUE(nf);
  EXPECT_TRUE(nf->is_not_found()) << nf->what();
  EXPECT_EQ(std::string(nf->what()).rfind("reading s3://b/x: ", 0), 0u) << nf->what();
  const auto io = error_from([] { st::check(arrow::Status::IOError("AWS Error NETWORK_CONNECTION"), "s3://b/x"); });
  ASSERT_TRUE(io);
  EXPECT_TRUE(io->is_storage());
  EXPECT_NE(std::string(io->what()).find("AWS_ENDPOINT_URL_S3"), std::string::npos) << "says what to check";
  const auto other = error_from([] { st::check(arrow::Status::Invalid("bad"), "x"); });
  ASSERT_TRUE(other);
  EXPECT_EQ(other->kind(), Error::Kind::kJob);
  EXPECT_NO_THROW(st::check(arrow::Status::OK(), "x"));
  EXPECT_EQ(st::value_or_throw(arrow::Result<int>(7), "x"), 7);
}

TEST(StorageNames, WithRetriesRetriesOnlyTransientStoreFailures) {
  ScopedEnv attempts("ORCHARD_STORAGE_ATTEMPTS", "2");  // backoff 0.2 s
  int calls = 0;
  st::with_retries("flaky", [&] {
    if (++calls < 2) throw Error::storage("s3://b/x: HTTP status 503 SlowDown");
  });
  EXPECT_EQ(calls, 2);
  calls = 0;
  const auto e = error_from([&] { st::with_retries("always", [&] { ++calls, throw Error::storage("reset"); }); });
  ASSERT_TRUE(e);
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(e->is_storage());
  EXPECT_NE(std::string(e->what()).find("after 2 attempts"), std::string::npos) << e->what();
  // A refusal as check() makes it from the store's answer: the same answer will come again.
  const auto denied = error_from([] {
    st::check(arrow::Status::IOError("AWS Error ACCESS_DENIED during GetObject operation"), "s3://b/x: cannot read");
  });
  ASSERT_TRUE(denied && denied->is_storage());
  for (const auto& once : {Error::not_found("gone"), Error::bad_input("corrupt"), Error("usage"), *denied}) {
    calls = 0;
    EXPECT_THROW(st::with_retries("once", [&] { ++calls, throw once; }), Error);
    EXPECT_EQ(calls, 1) << once.what();
  }
}

// ---------------------------------------------------------------------------------------------

TEST(Layout, PartNamesRoundTrip) {
  EXPECT_EQ(ly::part_name(0), "part-00000.parquet");
  EXPECT_EQ(ly::part_name(12), "part-00012.parquet");
  EXPECT_EQ(ly::part_name(99999), "part-99999.parquet");
  EXPECT_EQ(ly::part_name(123456), "part-123456.parquet");
  for (const int i : {0, 1, 9, 10, 12345, 99999, 100000, 123456789})
    EXPECT_EQ(ly::parse_part(ly::part_name(i)), i) << ly::part_name(i);
  for (const std::string bad : {"part-.parquet", "part-1a.parquet", "part--1.parquet", "part-+1.parquet",
                                "xpart-00001.parquet", "part-00001.parquet.tmp-12-0", "part-00001.csv",
                                "part-00001", "part-1234567890.parquet", "", "part-00001.Parquet", "_SUCCESS"})
    EXPECT_EQ(ly::parse_part(bad), std::nullopt) << bad;
  EXPECT_EQ(ly::feature_part(st::open("/o"), 7).display(), "/o/features/part-00007.parquet");
  EXPECT_EQ(ly::error_part(st::open("/o"), 7).display(), "/o/errors/part-00007.parquet");
  EXPECT_EQ(ly::pca_part(st::open("/o"), 7).display(), "/o/pca_features/part-00007.parquet");
  const auto tmp = ly::temporary_name("/o/features/part-00007.parquet", "ip-10-0-0-7.ec2", 4242, 3);
  EXPECT_EQ(tmp, "/o/features/part-00007.parquet.tmp-ip-10-0-0-7.ec2-4242-3");
  EXPECT_TRUE(ly::is_temporary(tmp));
  EXPECT_FALSE(ly::is_temporary("part-00007.parquet"));
  EXPECT_EQ(ly::parse_part(base_name(tmp)), std::nullopt) << "a temporary is never taken for a part";
  const auto w = ly::parse_temporary(base_name(tmp));
  ASSERT_TRUE(w) << "a temporary names its writer";
  EXPECT_EQ(w->shard, 7);
  EXPECT_EQ(w->host, "ip-10-0-0-7.ec2") << "host names may hold '-'";
  EXPECT_EQ(w->pid, 4242);
  const auto success = ly::parse_temporary("_SUCCESS.tmp-h-1-0");
  ASSERT_TRUE(success);
  EXPECT_EQ(success->shard, -1) << "not a part";
  for (const std::string bad : {"part-00007.parquet", "part-00007.parquet.tmp-4242-3", "part-00007.parquet.tmp-h-x-3",
                                "part-00007.parquet.tmp-h-1-", "part-00007.parquet.tmp--1-2"})
    EXPECT_EQ(ly::parse_temporary(bad), std::nullopt) << bad;
}

}  // namespace
