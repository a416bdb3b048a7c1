#include "writer.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "labels.h"

namespace ptm {

namespace {

std::string why() { return std::strerror(errno); }

std::string dir_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) throw ModelError("cannot write '" + path + "': cannot create a temporary file beside it: " + why());
  auto fail = [&](const std::string& what) {
    const std::string reason = why();
    ::close(fd);
    ::unlink(tmp.c_str());
    throw ModelError("cannot write '" + path + "': " + what + ": " + reason);
  };
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    const ssize_t w = ::write(fd, p + done, size - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write failed");
    }
    done += size_t(w);
  }
  if (::fchmod(fd, 0644) != 0) fail("chmod failed");
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw ModelError("cannot write '" + path + "': close failed: " + why());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = why();
    ::unlink(tmp.c_str());
    throw ModelError("cannot write '" + path + "': rename failed: " + reason);
  }
  // The rename itself must reach the disk.
  const int dfd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// torch.save's zip layout, written as torch::pickle_save does but without
// type tags on the dict: a tagged dict names torch.jit._pickle.restore_type_tag,
// which torch.load refuses by default since PyTorch 2.6 (weights_only).
std::string labels_text(const std::vector<std::string>& labels) {
  std::string text;
  for (const auto& l : labels) {
    if (l.find('\n') != std::string::npos) throw ModelError("label '" + l + "' contains a line break");
    text += l + "\n";
  }
  return text;
}

std::vector<char> serialize_state_dict(const StateDict& state, const std::vector<std::string>* labels) {
  const std::string text = labels ? labels_text(*labels) : std::string();
  c10::Dict<std::string, at::Tensor> d;
  for (const auto& e : state.entries) d.insert(e.name, e.tensor.detach().contiguous());
  std::vector<char> pickled;
  torch::jit::Pickler pickler(
      [&](const char* p, size_t n) { pickled.insert(pickled.end(), p, p + n); }, nullptr, nullptr, nullptr,
      nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(c10::IValue(d));
  pickler.stop();
  std::vector<char> out;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* p, size_t n) {
    out.insert(out.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n);
    return n;
  });
  torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(), writer);
  if (labels) writer.writeRecord(kLabelsRecord, text.data(), text.size());
  writer.writeEndOfFile();
  return out;
}

void save_state_dict(const std::string& path, const StateDict& state, const std::vector<std::string>* labels) {
  const std::vector<char> bytes = serialize_state_dict(state, labels);
  write_file_atomic(path, bytes.data(), bytes.size());
}

std::string save_model_and_labels(const std::string& path, const StateDict& state,
                                  const std::vector<std::string>& labels) {
  save_state_dict(path, state, &labels);
  const std::string beside = labels_path_beside(path);
  save_labels(beside, labels);
  return beside;
}

void save_labels(const std::string& path, const std::vector<std::string>& labels) {
  const std::string text = labels_text(labels);
  write_file_atomic(path, text.data(), text.size());
}

}  // namespace ptm
