// The classifier runtime: loads a model file (any supported format) into a
// built-in architecture or TorchScript, and runs it. No LibTorch header is
// needed to use it; `forward` on at::Tensor is for callers that have one.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "loader.h"
#include "registry.h"

namespace at {
class Tensor;
}

namespace ptm {

enum class Precision { Float32, Float16, BFloat16, Int8 };

struct ModelInfo;

struct ClassifierOptions {
  std::string model;         // file path
  std::string architecture;  // torchvision name; empty: detected from the weights
  int64_t num_classes = 0;   // 0: as in the file; else a new head when it differs
  std::string labels;        // labels file; empty: ImageNet names for 1000 classes
  std::string wrapper_key;   // checkpoint entry holding the weights; empty: automatic
  bool strict = true;        // refuse weights that do not fit exactly
  int threads = 0;           // intra-op threads; 0: every core
  bool optimize = true;      // run a frozen, optimised graph of the model (BatchNorm folded)
  std::string device = "cpu";  // "cpu", "cuda" or "cuda:N"
  Precision precision = Precision::Float32;  // Float16: CUDA; BFloat16: CUDA, or CPUs with AVX-512 BF16 / AMX
  bool channels_last = false;  // CUDA: NHWC activations (tensor cores like them)
  bool cuda_graphs = false;    // CUDA: capture each batch size once, replay it after
  int input_size = 0;  // height and width of the model input; 0: the model's own (package, architecture)
  // Int8 (CPU, built-in architectures): the activations' ranges are
  // measured on `calibration_images` images, the first ones run or, with
  // `calibration` (a folder), that many of the folder's images at load,
  // read by `calibration_reader` (path, model -> 3 x crop x crop floats,
  // preprocessed as the model wants; false: not an image). Until then the
  // model runs in float32, its results as good as fp32's.
  int calibration_images = 32;
  std::string calibration;
  std::function<bool(const std::string& path, const ModelInfo& model, std::vector<float>& chw)> calibration_reader;
};

// Why `device` cannot run models here ("" when it can), e.g. a LibTorch
// without CUDA, or no GPU.
std::string device_unavailable_reason(const std::string& device);

struct ModelInfo {
  std::string path;
  std::string format;
  std::string architecture;  // "torchscript" for TorchScript files; as exported for .pt2
  int64_t num_classes = 0;
  int64_t parameters = 0;
  int crop_size = 224, resize_size = 256;  // torchvision's eval transform for it
  bool bicubic = false;                     // ... and its interpolation
  bool stretch = false;                     // resized to crop_size x crop_size, aspect ratio not kept, no crop
  std::array<float, 3> mean = kImageNetMean, std = kImageNetStd;  // ... and normalisation
  int64_t max_batch = 0;  // images per model call (0: any; .pt2 packages have a largest)
  std::vector<std::string> labels;
  LoadReport report;
  std::vector<std::string> notes;
  // Asked for but not done, the model running otherwise (precision=bf16 on
  // a CPU without bfloat16 instructions): the elements warn.
  std::vector<std::string> warnings;
};

struct Prediction {
  int64_t index;
  float score;
};

class Classifier {
 public:
  explicit Classifier(const ClassifierOptions& options);  // throws ModelError
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  const ModelInfo& info() const;

  // `input`: N x 3 x H x W float32, normalised. Returns N x num_classes logits.
  at::Tensor forward(const at::Tensor& input);
  // The same through the model as built (torch::nn modules), never the
  // optimised graph: what optimize=false runs, for checking the one against
  // the other. Throws ModelError for TorchScript files and .pt2 packages
  // (no such model).
  at::Tensor forward_eager(const at::Tensor& input);

  // Makes `size` x `size` the model's input (info().crop_size; resize_size
  // keeps the crop's proportion, and the optimised graph is made for it)
  // when the model runs at that size. Returns "" on success, else why not
  // (nothing changes then).
  std::string set_input_size(int size);
  // Plain-buffer form: `input` holds n*3*h*w floats; `logits` receives
  // n*num_classes floats.
  void forward(const float* input, int64_t n, int64_t h, int64_t w, std::vector<float>& logits);

  const std::string& label(int64_t index) const;

  // The persistent model input, on the model's device, in its precision and
  // memory format: callers write images in place (a CUDA kernel straight
  // from video memory, or write_input) and then call run_input.
  struct InputBuffer {
    void* data = nullptr;        // image i starts at i * image_elements elements
    int64_t image_elements = 0;  // 3 * size * size
    int size = 0;                // height and width
    Precision type = Precision::Float32;
    bool channels_last = false;  // each image HWC rather than CHW
    bool cuda = false;
    int device = -1;
  };
  InputBuffer input_buffer(int64_t capacity);  // grows (and forgets captured graphs) when needed
  // The cudaStream_t (as void*) all of the model's work runs on; nullptr on CPU.
  void* cuda_stream() const;
  // Image `index` of the input from 3 x size x size float32 values (CHW) in
  // host memory, or in the model's device memory when `on_device`.
  void write_input(int64_t index, const float* chw, bool on_device);
  // Runs images [0, n) of the input. With k > 0 only the top k of each
  // image come back to the host (indices and scores after `fn`: 0 none,
  // 1 softmax, 2 sigmoid); with k == 0 every logit does (n x classes).
  void run_input(int64_t n, int k, int fn, std::vector<float>& scores, std::vector<int64_t>& indices);
  // One pass on a blank image at the input size (LibTorch's per-thread
  // state made on the calling thread), not counted as an int8 calibration
  // image.
  void warm_up();
  bool on_cuda() const;
  int cuda_device() const;  // the model's CUDA device; -1 on the CPU

  // For fine-tuning (built-in architectures with a linear head only; throws
  // ModelError otherwise): the features the head sees (N x D), and the
  // weights with torchvision's keys.
  at::Tensor features(const at::Tensor& input);
  StateDict state_dict() const;

  // precision=int8: where the model stands. "" when not asked for int8;
  // else "calibrating (N images to go)", "int8", or why float32 runs
  // instead ("float32: its int8 graph was not 1.1x as fast (...)"). The
  // int8 graph is kept only where it runs at least 1.1x as fast as the
  // float32 one (the two timed in turns on the last calibration batch;
  // PTM_INT8_ALWAYS=1 keeps it regardless).
  // Safe from any thread.
  std::string int8_status() const;
  std::string head_prefix() const;  // e.g. "fc", "classifier.1"
  // The head and a second head of its shape (DeiT distilled: "head",
  // "head_dist"): a trained head replaces each.
  std::vector<std::string> head_prefixes() const;
  int64_t feature_size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The k largest of `scores` (ties: lower index first).
std::vector<Prediction> top_k(const float* scores, int64_t count, int k);
void softmax_inplace(float* scores, int64_t count);

class ClassifierModuleImpl;
// For tests: the graph of built-in model `m` as a Classifier makes it
// (traced at size x size, frozen; `bf16`: the model turned bfloat16 first,
// its input bfloat16 NHWC) run on ptm's oneDNN executor against the float32
// model on random images at each batch size in `batches`: the largest
// difference relative to max(1, the largest logit). -1 with `why` set where
// the executor does not take the graph or this build has none. `m` stays
// bfloat16 after a `bf16` call. `plan`, when given, gets what the
// executor's plan made of the graph.
struct DnnlPlanCounts {
  int winograd = -1;        // convolutions run as Winograd
  int channel_scales = -1;  // channel scales run as ptm's own pass (DnnlGraph::channel_scales)
  int folded_scales = -1;   // ... folded into the next convolution (DnnlGraph::folded_scales)
  size_t activation_bytes = 0;  // the arena held (DnnlGraph::activation_bytes)
  size_t scratchpad_bytes = 0;  // DnnlGraph::scratchpad_bytes
};
double dnnl_graph_error(ClassifierModuleImpl& m, int64_t size, const std::vector<int64_t>& batches, std::string* why,
                        bool bf16 = false, DnnlPlanCounts* plan = nullptr);
// The executor's int8 graph (DnnlGraph::int8) calibrated on `calibration`
// random images, against the float32 model on three others: the largest
// difference relative to the largest logit, and how many convolutions ran
// in 8 bits; -1 with `why` where the executor does not take the model.
double dnnl_int8_error(ClassifierModuleImpl& m, int64_t size, int calibration, std::string* why,
                       int* int8_convolutions = nullptr);

}  // namespace ptm
