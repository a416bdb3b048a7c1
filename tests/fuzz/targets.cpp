// Fuzz targets for the readers of untrusted files, one per reader, built
// with AddressSanitizer and UndefinedBehaviorSanitizer. With clang and
// -fsanitize=fuzzer (meson -Dfuzzing=true, tests/fuzz/run-libfuzzer) each
// is a libFuzzer program; in the regular build replay.cpp drives the same
// entry point over the seed corpus, the regressions and mutations of them.
//
// The contract every target checks: any input loads, or fails with
// ptm::ModelError; any other exception, memory error, leak or undefined
// behaviour is a finding. One target is chosen at compile time:
//   PTM_FUZZ_TARGET = zip | pickle | legacy | safetensors | pt2 | labels | config | detect
#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "models/checkpoint.h"
#include "models/error.h"
#include "models/labels.h"
#include "models/loader.h"
#include "models/model_folder.h"

#define PTM_STR2(x) #x
#define PTM_STR(x) PTM_STR2(x)

namespace {

// What became of the inputs (replay.cpp prints it).
struct Counts {
  long loaded = 0, rejected = 0, skipped = 0;
} counts;

// The input as a file: readers take paths. A memfd costs no disk and is
// reopened through /proc like any regular file.
class MemFile {
 public:
  MemFile() : fd_(::memfd_create("ptm-fuzz", 0)) {
    if (fd_ < 0) std::abort();
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  const std::string& write(const uint8_t* d, size_t n) {
    if (::ftruncate(fd_, 0) != 0) std::abort();
    for (size_t done = 0; done < n;) {
      const ssize_t w = ::pwrite(fd_, d + done, n - done, off_t(done));
      if (w <= 0) std::abort();
      done += size_t(w);
    }
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};

MemFile& mem_file() {
  static MemFile f;
  return f;
}

// Touches every byte of every tensor: a view outside its buffer is found here.
void touch(const ptm::Checkpoint& ck) {
  for (const auto& e : ck.state.entries) (void)e.tensor.sum().item<double>();
}

// A checkpoint through read_checkpoint. TorchScript archives go to
// LibTorch's own loader, which runs code from the file (trusted files
// only, as the README says): they are not this reader's input.
void checkpoint(const uint8_t* d, size_t n) {
  const std::string& path = mem_file().write(d, n);
  try {
    if (ptm::sniff_format(path) == ptm::FileFormat::TorchScript) {
      ++counts.skipped;
      return;
    }
    ptm::ReadOptions o;
    o.verify_checksums = n & 1;  // most mutations would fail the CRCs: half the inputs skip them
    touch(ptm::read_checkpoint(path, o));
    ++counts.loaded;
  } catch (const ptm::ModelError&) {
    ++counts.rejected;
  }
}

// A pickle as torch.save's data.pkl, with its storages. Input: a count n,
// n little-endian u32 storage sizes, then the pickle; the harness writes
// the zip torch.save would (storages "0".."n-1", zero bytes), so that
// mutations go to the unpickler instead of the archive.
void pickle_in_zip(const uint8_t* d, size_t n) {
  if (n < 1) return;
  const size_t storages = d[0];
  if (n < 1 + 4 * storages) return;
  std::vector<uint32_t> sizes(storages);
  uint64_t total = 0;
  for (size_t i = 0; i < storages; ++i) {
    std::memcpy(&sizes[i], d + 1 + 4 * i, 4);
    total += sizes[i];
  }
  if (total > (16u << 20)) {  // the harness's own bound, not the reader's
    ++counts.skipped;
    return;
  }
  const uint8_t* pkl = d + 1 + 4 * storages;
  const size_t pkl_size = n - 1 - 4 * storages;
  std::vector<char> zip;
  {
    caffe2::serialize::PyTorchStreamWriter w([&](const void* p, size_t k) {
      zip.insert(zip.end(), static_cast<const char*>(p), static_cast<const char*>(p) + k);
      return k;
    });
    w.writeRecord("data.pkl", pkl, pkl_size);
    const std::vector<char> zeros(storages ? *std::max_element(sizes.begin(), sizes.end()) : 0, 0);
    for (size_t i = 0; i < storages; ++i) w.writeRecord("data/" + std::to_string(i), zeros.data(), sizes[i]);
    w.writeEndOfFile();
  }
  checkpoint(reinterpret_cast<const uint8_t*>(zip.data()), zip.size());
}

void pt2(const uint8_t* d, size_t n) {
  const std::string& path = mem_file().write(d, n);
  try {
    const ptm::PackageInfo info = ptm::read_package_info(path);
    for (const auto& m : info.metadata) (void)info.find(m.first);
    ++counts.loaded;
  } catch (const ptm::ModelError&) {
    ++counts.rejected;
  }
}

void labels(const uint8_t* d, size_t n) {
  try {
    const auto l = ptm::parse_labels(std::string_view(reinterpret_cast<const char*>(d), n), "fuzz input");
    if (l.empty()) std::abort();  // parse_labels promises at least one
    ++counts.loaded;
  } catch (const ptm::ModelError&) {
    ++counts.rejected;
  }
}

// A hub folder: config.json is the input up to its first NUL byte,
// preprocessor_config.json what follows it (none without a NUL), beside a
// model.safetensors.
struct ConfigDir {
  std::filesystem::path path;
  ConfigDir() {
    namespace fs = std::filesystem;
    path = (fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path()) /
           ("ptm-fuzz-config-" + std::to_string(::getpid()));
    fs::create_directories(path);
    std::ofstream(path / "model.safetensors", std::ios::binary) << std::string(8, '\0') << "{}";
  }
  ~ConfigDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

void config(const uint8_t* d, size_t n) {
  namespace fs = std::filesystem;
  static const ConfigDir folder;
  const fs::path& dir = folder.path;
  const auto* c = reinterpret_cast<const char*>(d);
  const void* nul = std::memchr(d, 0, n);
  const size_t first = nul ? size_t(static_cast<const uint8_t*>(nul) - d) : n;
  std::ofstream(dir / "config.json", std::ios::binary | std::ios::trunc).write(c, std::streamsize(first));
  if (nul)
    std::ofstream(dir / "preprocessor_config.json", std::ios::binary | std::ios::trunc)
        .write(c + first + 1, std::streamsize(n - first - 1));
  else
    fs::remove(dir / "preprocessor_config.json");
  try {
    (void)ptm::read_model_folder(dir.string());
    ++counts.loaded;
  } catch (const ptm::ModelError&) {
    ++counts.rejected;
  }
}

// Detection over keys and shapes. Input: one tensor a line, "key d0,d1,...";
// the tensors are meta tensors (shapes without storage), as detection reads
// shapes only.
void detect(const uint8_t* d, size_t n) {
  ptm::StateDict sd;
  std::string_view text(reinterpret_cast<const char*>(d), n);
  while (!text.empty() && sd.entries.size() < 8192) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    const size_t sp = line.rfind(' ');
    if (sp == std::string_view::npos) continue;
    std::vector<int64_t> shape;
    bool ok = true;
    int64_t numel = 1;
    std::string_view dims = line.substr(sp + 1);
    while (ok && !dims.empty()) {
      const size_t comma = dims.find(',');
      const std::string_view v = dims.substr(0, comma);
      dims.remove_prefix(comma == std::string_view::npos ? dims.size() : comma + 1);
      int64_t x = 0;
      for (char ch : v) {
        if (ch < '0' || ch > '9' || x > (int64_t(1) << 40)) ok = false;
        else x = x * 10 + (ch - '0');
      }
      ok = ok && !v.empty() && shape.size() < 8 && !__builtin_mul_overflow(numel, x, &numel);
      shape.push_back(x);
    }
    if (!ok) continue;  // not a shape the readers could have produced
    sd.entries.push_back({std::string(line.substr(0, sp)), at::empty(shape, at::TensorOptions().device(at::kMeta))});
  }
  try {
    const ptm::Candidate c = ptm::detect_architecture(sd);
    (void)ptm::input_size_of(c.name, sd);
    (void)ptm::differences(c, sd);
    ++counts.loaded;
  } catch (const ptm::ModelError&) {
    ++counts.rejected;
  }
  try {
    std::vector<std::string> notes;
    if (ptm::select_weights_prefix(sd, notes)) (void)ptm::detect_architecture(sd);
  } catch (const ptm::ModelError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  const std::string_view t = PTM_STR(PTM_FUZZ_TARGET);
  if (t == "zip" || t == "legacy" || t == "safetensors") checkpoint(d, n);
  else if (t == "pickle") pickle_in_zip(d, n);
  else if (t == "pt2") pt2(d, n);
  else if (t == "labels") labels(d, n);
  else if (t == "config") config(d, n);
  else if (t == "detect") detect(d, n);
  else std::abort();
  return 0;
}

// For replay.cpp.
const char* ptm_fuzz_target() { return PTM_STR(PTM_FUZZ_TARGET); }
void ptm_fuzz_counts(long* loaded, long* rejected, long* skipped) {
  *loaded = counts.loaded;
  *rejected = counts.rejected;
  *skipped = counts.skipped;
}
