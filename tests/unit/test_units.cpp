// Unit tests of the readers' building blocks on hand-made bytes.
#include <gtest/gtest.h>

#include <torch/nn/module.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <fstream>
#include <unistd.h>

#include "../common/fixtures.h"
#include "models/architectures.h"
#include "models/checkpoint.h"
#include "models/classifier.h"
#include "models/labels.h"
#include "models/loader.h"
#include "models/pickle.h"
#include "models/registry.h"
#include "models/writer.h"

namespace ptm::test {
namespace {

// A string literal with embedded NULs, whole.
template <size_t N>
std::string B(const char (&s)[N]) {
  return std::string(s, N - 1);
}

pickle::Ref unpickle(const std::string& bytes) {
  return pickle::load(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), nullptr, "test");
}

std::string error_of(const std::string& bytes) {
  try {
    unpickle(bytes);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

TEST(Pickle, OneKeyDictWithSetitem) {
  // {'a': 5} as protocol 2 writes it: EMPTY_DICT BINPUT BINUNICODE BININT1 SETITEM STOP
  auto v = unpickle(B("\x80\x02}q\x00X\x01\x00\x00\x00" "aK\x05s."));
  ASSERT_TRUE(v->is(pickle::Value::Kind::Dict));
  ASSERT_EQ(v->dict.size(), 1u);
  EXPECT_EQ(v->dict[0].first->s, "a");
  EXPECT_EQ(v->dict[0].second->i, 5);
}

TEST(Pickle, OrderedDictAndMemo) {
  // OrderedDict() with two items, the second value fetched from the memo.
  std::string p = B("\x80\x02" "ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00xK\x07q\x02X\x01\x00\x00\x00yh\x02u.");
  auto v = unpickle(p);
  ASSERT_TRUE(v->is(pickle::Value::Kind::Dict));
  ASSERT_EQ(v->dict.size(), 2u);
  EXPECT_EQ(v->dict[1].second->i, 7);
}

// Globals outside the allowlist are placeholders: calling one gives an
// inert Object with its name and arguments, never a call.
TEST(Pickle, ForeignGlobalsAreInertPlaceholders) {
  auto g = unpickle("\x80\x02" "cposix\nsystem\n.");
  ASSERT_TRUE(g->is(pickle::Value::Kind::Global));
  EXPECT_TRUE(g->inert);
  EXPECT_EQ(g->s, "posix.system");
  auto sg = unpickle("\x80\x04\x8c\x02os\x8c\x06system\x93.");  // STACK_GLOBAL form
  EXPECT_TRUE(sg->inert);
  EXPECT_EQ(sg->s, "os.system");
  auto call = unpickle(B("\x80\x02" "cposix\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85R."));
  ASSERT_TRUE(call->is(pickle::Value::Kind::Object));
  EXPECT_EQ(call->s, "posix.system");
  ASSERT_EQ(call->items.size(), 1u);
  EXPECT_EQ(call->items[0]->s, "ls");
  EXPECT_EQ(pickle::describe(*call), "posix.system('ls')");
  // A __reduce__ chain: the placeholder's result called again.
  auto chain = unpickle(B("\x80\x02" "cposix\nsystem\nX\x02\x00\x00\x00ls\x85RX\x02\x00\x00\x00rm\x85R."));
  ASSERT_TRUE(chain->is(pickle::Value::Kind::Object));
  EXPECT_EQ(chain->s, "posix.system(...)");
  // builtins.getattr(posix.system('ls'), 'x') and an instance built with
  // NEWOBJ + BUILD keep their arguments and state as plain values.
  auto ga = unpickle(B("\x80\x02" "cbuiltins\ngetattr\ncposix\nsystem\nX\x02\x00\x00\x00ls\x85RX\x01\x00\x00\x00x\x86R."));
  EXPECT_EQ(pickle::describe(*ga), "builtins.getattr(posix.system('ls'), 'x')");
  auto ns = unpickle(B("\x80\x02" "cargparse\nNamespace\n)\x81}X\x02\x00\x00\x00lrG?\xb9\x99\x99\x99\x99\x99\x9asb."));
  EXPECT_EQ(pickle::describe(*ns), "argparse.Namespace(lr=0.1)");
}

// numpy scalars (protocol 2: bytes as _codecs.encode(text, 'latin1')) are
// decoded to plain values, tagged with their numpy type.
TEST(Pickle, NumpyScalarsAreDecoded) {
  // numpy.core.multiarray.scalar(numpy.dtype('f8', False, True) + BUILD (3, '<', ...), 0.5 as bytes)
  std::string p = B("\x80\x02" "cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00" "f8\x89\x88\x87R"
                    "(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
                    "c_codecs\nencode\nX\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\xc3\xa0?X\x06\x00\x00\x00latin1\x86R\x86R.");
  auto v = unpickle(p);
  ASSERT_TRUE(v->is(pickle::Value::Kind::Float)) << v->kind_name();
  EXPECT_EQ(v->f, 0.5);
  EXPECT_EQ(pickle::describe(*v), "numpy.float64 = 0.5");
}

TEST(Pickle, RebuildFromTypeOnlyWrapsAllowedCalls) {
  // _rebuild_from_type_v2(posix.system, Tensor, ('ls',), {}): a placeholder
  // where a tensor's rebuild function must be is refused by name.
  EXPECT_NE(error_of(B("\x80\x02" "ctorch._utils\n_rebuild_from_type_v2\n(cposix\nsystem\nctorch._tensor\nTensor\n"
                       "X\x02\x00\x00\x00ls\x85}tR."))
                .find("refusing to load global 'posix.system' as a tensor's rebuild function"),
            std::string::npos);
  // ...(collections.OrderedDict, builtins.dict, (), {}): not a tensor type.
  std::string p = B("\x80\x02" "ctorch._utils\n_rebuild_from_type_v2\n(ccollections\nOrderedDict\n"
                    "ccollections\nOrderedDict\n)}tR.");
  EXPECT_NE(error_of(p).find("unsupported type"), std::string::npos) << error_of(p);
  // A tensor type is a marker, never called.
  EXPECT_NE(error_of("\x80\x02" "ctorch.nn.parameter\nParameter\n)R.").find("refusing to construct"), std::string::npos);
}

TEST(Pickle, MalformedStreamsFail) {
  EXPECT_NE(error_of(""), "");
  EXPECT_NE(error_of("\x80\x02"), "");                             // no STOP
  EXPECT_NE(error_of("\x80\x02s."), "");                           // SETITEM on an empty stack
  EXPECT_NE(error_of("\x80\x02h\x05."), "");                       // memo miss
  EXPECT_NE(error_of("\x80\x02X\xff\xff\xff\xff."), "");           // length past the end
  EXPECT_NE(error_of(std::string("\x80\x02\xff.", 4)), "");        // unknown opcode
  EXPECT_NE(error_of("\x80\x02K\x01K\x02s."), "");                 // SETITEM on an int
  std::string deep = "\x80\x02";
  for (int i = 0; i < 400; ++i) deep += "]";
  for (int i = 0; i < 399; ++i) deep += "a";
  deep += ".";
  EXPECT_NE(error_of(deep).find("nested"), std::string::npos);
}

// ------------------------------------------------ tensor records of torch 2.x
// Hand-made protocol-2 pickles of one tensor record over a storage given
// here, so the decoders are checked on every machine (the fixture sets
// check them against torch's own conversions where a torch 2.x runs).

std::string bin_str(const std::string& s) {
  const uint32_t n = uint32_t(s.size());
  return "X" + std::string(reinterpret_cast<const char*>(&n), 4) + s;
}

// (storage, 0, (n,), (1,), False, OrderedDict(), torch.<dtype>[, {meta: True}])
// through _rebuild_tensor_v3; the persistent id names an UntypedStorage.
std::string v3_record(const std::string& dtype, int n, const std::string& meta = "") {
  std::string p = B("\x80\x02" "ctorch._utils\n_rebuild_tensor_v3\n(");
  p += "(" + bin_str("storage") + "ctorch.storage\nUntypedStorage\n" + bin_str("0") + bin_str("cpu") + "K" +
       char(n) + "tQ";
  p += B("K\x00") + "K" + char(n) + B("\x85K\x01\x85\x89" "ccollections\nOrderedDict\n)R");
  p += "ctorch\n" + dtype + "\n";
  if (!meta.empty()) p += "}" + bin_str(meta) + B("\x88s");
  return p + "tR.";
}

// The record read over `bytes`; `big_endian` as the file's byteorder says.
at::Tensor read_v3(const std::string& dtype, const std::vector<uint8_t>& bytes, bool big_endian = false,
                   const std::string& meta = "") {
  auto storage = std::make_shared<pickle::Value>();
  storage->kind = pickle::Value::Kind::Storage;
  storage->storage = std::make_shared<pickle::Storage>();
  storage->storage->dtype = pickle::find_dtype("uint8");
  storage->storage->nbytes = int64_t(bytes.size());
  storage->storage->bytes = at::tensor(at::ArrayRef<uint8_t>(bytes), at::kByte);
  storage->storage->big_endian = big_endian;
  const pickle::DType* d = pickle::find_dtype(dtype);  // unknown names: one byte each (refused by name)
  const std::string p = v3_record(dtype, int(bytes.size() / (d ? d->size : 1)), meta);
  auto v = pickle::load(reinterpret_cast<const uint8_t*>(p.data()), p.size(),
                        [&](const pickle::Value&) { return storage; }, "test");
  return pickle::materialize(*v, "tensor 'x'");
}

std::string v3_error(const std::string& dtype, const std::vector<uint8_t>& bytes, const std::string& meta = "") {
  try {
    read_v3(dtype, bytes, false, meta);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

TEST(Pickle, Float8DecodesExactly) {
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    const char* dtype;
    std::vector<uint8_t> bits;
    std::vector<float> want;  // NaN: a NaN is expected
  };
  const float nan = std::nanf("");
  const Case cases[] = {
      // 448 is the largest e4m3fn, 0x7f its NaN, 0x01 the smallest subnormal (2^-9).
      {"float8_e4m3fn", {0x00, 0x80, 0x38, 0x7e, 0x7f, 0x01, 0xc4}, {0.f, -0.f, 1.f, 448.f, nan, 0x1p-9f, -3.f}},
      // IEEE-like: 0x7c infinity, 0x7b the largest (57344).
      {"float8_e5m2", {0x3c, 0x7b, 0x7c, 0xfc, 0x7d, 0x01}, {1.f, 57344.f, inf, -inf, nan, 0x1p-16f}},
      // fnuz: 0x80 is the NaN, bias one more.
      {"float8_e4m3fnuz", {0x40, 0x80, 0x7f, 0xff, 0x01}, {1.f, nan, 240.f, -240.f, 0x1p-10f}},
      {"float8_e5m2fnuz", {0x40, 0x80, 0x7f, 0x01}, {1.f, nan, 57344.f, 0x1p-17f}},
      // A power of two: 0x7f is 1, 0 is 2^-127, 0xff NaN.
      {"float8_e8m0fnu", {0x7f, 0x80, 0x00, 0xfe, 0xff}, {1.f, 2.f, 0x1p-127f, 0x1p127f, nan}},
  };
  for (const auto& c : cases) {
    at::Tensor t = read_v3(c.dtype, c.bits);
    ASSERT_EQ(t.scalar_type(), at::kFloat) << c.dtype;
    ASSERT_EQ(t.numel(), int64_t(c.want.size()));
    for (size_t k = 0; k < c.want.size(); ++k) {
      const float got = t[int64_t(k)].item<float>();
      if (std::isnan(c.want[k])) {
        EXPECT_TRUE(std::isnan(got)) << c.dtype << " bits " << int(c.bits[k]) << " gave " << got;
      } else {
        EXPECT_EQ(got, c.want[k]) << c.dtype << " bits " << int(c.bits[k]);
        EXPECT_EQ(std::signbit(got), std::signbit(c.want[k])) << c.dtype << " bits " << int(c.bits[k]);
      }
    }
  }
}

TEST(Pickle, UnsignedAndByteOrder) {
  at::Tensor u16 = read_v3("uint16", {0x01, 0x02, 0xff, 0xff});
  EXPECT_EQ(u16.scalar_type(), at::kLong);
  EXPECT_EQ(u16[0].item<int64_t>(), 0x0201);
  EXPECT_EQ(u16[1].item<int64_t>(), 65535);
  EXPECT_EQ(read_v3("uint16", {0x01, 0x02}, true)[0].item<int64_t>(), 0x0102);  // big-endian file
  EXPECT_EQ(read_v3("uint32", {0xff, 0xff, 0xff, 0xff})[0].item<int64_t>(), 4294967295LL);
  EXPECT_EQ(read_v3("uint64", {1, 0, 0, 0, 0, 0, 0, 0x7f})[0].item<int64_t>(), 0x7f00000000000001LL);
  EXPECT_NE(v3_error("uint64", {0, 0, 0, 0, 0, 0, 0, 0x80}).find("above 2^63-1"), std::string::npos);
  // Classic dtypes through v3 too: swapped per element in big-endian files.
  EXPECT_EQ(read_v3("float32", {0x3f, 0x80, 0, 0}, true)[0].item<float>(), 1.0f);
  EXPECT_EQ(read_v3("int16", {0xff, 0xfe}, true)[0].item<int64_t>(), -2);
}

TEST(Pickle, RefusedDtypesAndMetadataAreNamed) {
  EXPECT_NE(v3_error("complex32", {0, 0, 0, 0}).find("tensor 'x' has dtype torch.complex32, which a classifier cannot use"),
            std::string::npos);
  EXPECT_NE(v3_error("float4_e2m1fn_x2", {0}).find("torch.float4_e2m1fn_x2"), std::string::npos);
  EXPECT_NE(v3_error("bits16", {0, 0}).find("torch.bits16"), std::string::npos);
  // A neg-bit view holds the un-negated values and says so in its metadata.
  at::Tensor neg = read_v3("int8", {3, 0xfe}, false, "neg");
  EXPECT_EQ(neg[0].item<int64_t>(), -3);
  EXPECT_EQ(neg[1].item<int64_t>(), 2);
  EXPECT_NE(v3_error("int8", {3}, "zzz").find("tensor metadata 'zzz' is not supported"), std::string::npos);
  // Names that are not callables or storages are refused by name.
  EXPECT_NE(error_of("\x80\x02" "ctorch\nfloat32\n)R.").find("refusing to call dtype 'torch.float32'"), std::string::npos);
  EXPECT_NE(v3_error("float9", {3}).find("refusing to load global 'torch.float9' as a tensor's dtype"), std::string::npos)
      << v3_error("float9", {3});
  EXPECT_NE(error_of("\x80\x02" "ctorch.storage\nUntypedStorage\n)R.").find("cannot be constructed"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02" "ctorch._utils\n_rebuild_tensor_v3\n)R.").find("malformed tensor record (v3)"),
            std::string::npos);
}

TEST(Labels, ImageNetMatchesTorchvision) {
  std::ifstream in(fixture("imagenet_labels.json"));
  auto want = nlohmann::json::parse(in).get<std::vector<std::string>>();
  EXPECT_EQ(imagenet_labels(), want);
}

TEST(Labels, FileReader) {
  auto path = std::filesystem::temp_directory_path() / "ptm-labels.txt";
  std::ofstream(path) << "cat\r\n  dog \n\nbird\n\n";
  auto l = read_labels_file(path.string());
  EXPECT_EQ(l, (std::vector<std::string>{"cat", "dog", "", "bird"}));
  std::ofstream(path, std::ios::trunc) << "\n\n";
  EXPECT_THROW(read_labels_file(path.string()), ModelError);
  EXPECT_THROW(read_labels_file("/nonexistent"), ModelError);
}

// ptmtrainsink's output: the labels inside the weights file are used, a
// stale labels file beside it (a crash between the two writes, or an old
// one) is named in the notes; an explicit labels file still wins.
TEST(Labels, SavedInsideTheModelComeFirst) {
  const auto dir = std::filesystem::temp_directory_path() / ("ptm-labels-inside-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "m.pth").string();
  Checkpoint ck = read_checkpoint(fixture("resnet18_10.pth"));
  EXPECT_TRUE(ck.labels.empty());
  std::vector<std::string> inside;
  for (int i = 0; i < 10; ++i) inside.push_back("inside " + std::to_string(i));
  const std::string beside = save_model_and_labels(path, ck.state, inside);
  EXPECT_EQ(beside, (dir / "m.labels.txt").string());
  EXPECT_EQ(read_checkpoint(path).labels, inside);
  EXPECT_EQ(read_labels_file(beside), inside);

  std::vector<std::string> old;
  for (int i = 0; i < 10; ++i) old.push_back("old " + std::to_string(i));
  save_labels(beside, old);
  ClassifierOptions o;
  o.model = path;
  {
    Classifier c(o);
    EXPECT_EQ(c.info().labels, inside);
    bool named = false;
    for (const auto& n : c.info().notes) named |= n.find("differ") != std::string::npos && n.find(beside) != std::string::npos;
    EXPECT_TRUE(named) << "the stale labels file is not named in the notes";
  }
  o.labels = beside;
  EXPECT_EQ(Classifier(o).info().labels, old);

  // Labels inside for another class count: refused, naming the file.
  std::vector<std::string> three = {"a", "b", "c"};
  save_state_dict(path, ck.state, &three);
  o.labels.clear();
  try {
    Classifier c(o);
    ADD_FAILURE() << "3 labels for 10 classes accepted";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("3 labels for 10 classes"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(TopK, OrderAndTies) {
  const float s[] = {0.1f, 0.7f, 0.7f, 0.05f, 0.9f};
  auto t = top_k(s, 5, 3);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].index, 4);
  EXPECT_EQ(t[1].index, 1);
  EXPECT_EQ(t[2].index, 2);
  EXPECT_EQ(top_k(s, 5, 10).size(), 5u);
  float p[] = {1.f, 2.f, 3.f};
  softmax_inplace(p, 3);
  EXPECT_NEAR(p[0] + p[1] + p[2], 1.0, 1e-6);
  EXPECT_GT(p[2], p[1]);
}

TEST(Registry, EveryNameBuildsAndHasAHead) {
  for (const auto& a : architectures()) {
    // Large; parity covers them.
    if (a.family == "vgg" && a.name != "vgg11") continue;
    if (a.family == "vit" && a.name != "vit_b_32" && a.name != "vit_tiny_patch16_224") continue;
    if (a.name == "regnet_y_128gf" || a.name == "regnet_y_32gf" || a.name == "convnext_large" ||
        a.name == "timm/convnext_large")
      continue;
    // A position table fixes the input size: build it for 64x64.
    const int64_t size = a.position_table.empty() ? 0 : 64;
    auto m = create_architecture(a.name, 7, size);
    EXPECT_EQ(m->fixed_input_size(), size) << a.name;
    auto params = m->named_parameters();
    ASSERT_TRUE(params.contains(a.head + ".weight")) << a.name;
    EXPECT_EQ(params[a.head + ".weight"].size(0), 7) << a.name;
    at::NoGradGuard ng;
    // 80: small, and above the smallest input every architecture takes
    // (inception_v3's 75).
    // (ViT: the size of its table; MaxViT: its 7x7 windows must tile).
    const int64_t side = size > 0 ? size : a.family == "maxvit" ? 224 : 80;
    at::Tensor y = m->forward(at::zeros({1, 3, side, side}));
    EXPECT_EQ(y.sizes(), (at::IntArrayRef{1, 7})) << a.name;
  }
  EXPECT_THROW(create_architecture("resnet9000", 10), ModelError);
  EXPECT_THROW(create_architecture("resnet18", 0), ModelError);
}

StateDict state_of(torch::nn::Module& m) {
  StateDict sd;
  for (const auto& p : m.named_parameters()) sd.entries.push_back({p.key(), p.value().clone()});
  for (const auto& b : m.named_buffers()) sd.entries.push_back({b.key(), b.value().clone()});
  return sd;
}

// A first name every key shares is a wrapping module's attribute (a
// LightningModule's model., DataParallel's module.): stripped, level by
// level; keys that do not all share it are left as they are.
TEST(Checkpoint, SharedPrefixesAreStripped) {
  auto m = create_architecture("resnet18", 7);
  StateDict wrapped = state_of(*m);
  for (auto& e : wrapped.entries) e.name = "model.module." + e.name;
  const auto path = std::filesystem::temp_directory_path() / ("ptm-prefix-" + std::to_string(::getpid()) + ".ckpt");
  save_state_dict(path.string(), wrapped);
  Checkpoint ck = read_checkpoint(path.string());
  Candidate c = detect_architecture(ck.state);
  EXPECT_EQ(c.name, "resnet18");
  EXPECT_EQ(c.num_classes, 7);
  std::string notes;
  for (const auto& n : ck.notes) notes += n + "\n";
  EXPECT_NE(notes.find("stripped prefix 'model.'"), std::string::npos) << notes;
  EXPECT_NE(notes.find("stripped prefix 'module.'"), std::string::npos) << notes;

  // A key outside the shared prefix (the loss's class weights): nothing is
  // stripped on reading, and the keys as they are fit nothing; the largest
  // group under a prefix that fits is selected, the rest named.
  wrapped.entries.push_back({"criterion.weight", at::ones({7})});
  save_state_dict(path.string(), wrapped);
  ck = read_checkpoint(path.string());
  EXPECT_EQ(ck.state.entries.front().name.rfind("model.module.", 0), 0u);
  EXPECT_THROW(detect_architecture(ck.state), ModelError);
  std::vector<std::string> picked;
  ASSERT_TRUE(select_weights_prefix(ck.state, picked));
  c = detect_architecture(ck.state);
  EXPECT_EQ(c.name, "resnet18");
  EXPECT_EQ(c.num_classes, 7);
  ASSERT_EQ(picked.size(), 1u);
  EXPECT_NE(picked[0].find("tensors under 'model.module.'"), std::string::npos) << picked[0];
  EXPECT_NE(picked[0].find("'criterion.weight'"), std::string::npos) << picked[0];
  // Keys that fit already are left alone; with an architecture named, the
  // group must fit that one.
  EXPECT_FALSE(select_weights_prefix(ck.state, picked));
  ck = read_checkpoint(path.string());
  EXPECT_FALSE(select_weights_prefix(ck.state, picked, "resnet50"));
  EXPECT_TRUE(select_weights_prefix(ck.state, picked, "resnet18"));
  std::filesystem::remove(path);
}

// Weights that fit nothing: the closest architectures are named with how
// many keys and shapes match and the first keys that differ.
TEST(Loader, UnknownLayoutsNameTheFirstDifferences) {
  StateDict sd = state_of(*create_architecture("resnet18", 10));
  sd.entries.erase(std::remove_if(sd.entries.begin(), sd.entries.end(),
                                  [](const NamedTensor& e) { return e.name.rfind("layer4.1.", 0) == 0; }),
                   sd.entries.end());
  sd.entries.push_back({"extra.weight", at::zeros({3})});
  for (auto& e : sd.entries)
    if (e.name == "layer1.0.conv1.weight") e.tensor = at::zeros({64, 64, 1, 1});
  std::string msg;
  try {
    detect_architecture(sd);
  } catch (const ModelError& e) {
    msg = e.what();
  }
  for (const std::string part : {"closest: resnet18: ", " keys and shapes match", "first missing: layer4.1.conv1.weight",
                                 "first unexpected: extra.weight",
                                 "first mis-shaped: layer1.0.conv1.weight is [64, 64, 1, 1], resnet18 has [64, 64, 3, 3]"})
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
}

// timm's DeiT has the layout of timm's ViT of its width: detection answers
// the ViT and names DeiT too; architecture= or a folder's config naming DeiT
// picks it, and with it DeiT's preprocessing (ImageNet mean and std).
TEST(Loader, SameLayoutArchitecturesAreNamed) {
  auto m = create_architecture("deit_tiny_patch16_224", 10);
  StateDict sd = state_of(*m);
  Candidate c = detect_architecture(sd);
  EXPECT_EQ(c.name, "vit_tiny_patch16_224");
  EXPECT_EQ(c.num_classes, 10);
  EXPECT_EQ(c.also, std::vector<std::string>{"deit_tiny_patch16_224"});
  // torchvision's architectures are told apart by their weights alone.
  EXPECT_TRUE(detect_architecture(state_of(*create_architecture("vit_b_32", 10))).also.empty());

  const auto dir = std::filesystem::temp_directory_path() / ("ptm-deit-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  save_state_dict((dir / "pytorch_model.bin").string(), sd);
  ClassifierOptions o;
  o.model = (dir / "pytorch_model.bin").string();
  o.optimize = false;
  Classifier vit(o);
  EXPECT_EQ(vit.info().architecture, "vit_tiny_patch16_224");
  EXPECT_FLOAT_EQ(vit.info().mean[0], 0.5f);
  bool named = false;
  for (const auto& n : vit.info().notes) named |= n.find("architecture=deit_tiny_patch16_224") != std::string::npos;
  EXPECT_TRUE(named) << "no note naming DeiT";
  o.architecture = "deit_tiny_patch16_224";
  EXPECT_FLOAT_EQ(Classifier(o).info().mean[0], 0.485f);
  // A timm folder's config naming DeiT (with a pretrained tag) picks it.
  std::ofstream(dir / "config.json") << R"({"architecture": "deit_tiny_patch16_224.fb_in1k", "num_classes": 10})";
  o.architecture.clear();
  o.model = dir.string();
  Classifier deit(o);
  EXPECT_EQ(deit.info().architecture, "deit_tiny_patch16_224");
  for (const auto& n : deit.info().notes) EXPECT_EQ(n.find("the config names"), std::string::npos) << n;
  std::filesystem::remove_all(dir);
}

// Auxiliary heads (ArchInfo::ignored) may be in a checkpoint or not: both
// detect and load cleanly; keys under other prefixes still count.
TEST(Loader, IgnoredPrefixesAreOptional) {
  auto m = create_architecture("googlenet", 10);
  StateDict plain = state_of(*m);
  StateDict with_aux = plain;
  with_aux.entries.push_back({"aux1.conv.conv.weight", at::zeros({128, 512, 1, 1})});
  with_aux.entries.push_back({"aux2.fc2.weight", at::zeros({10, 1024})});
  for (const StateDict* sd : {&plain, &with_aux}) {
    Candidate c = detect_architecture(*sd);
    EXPECT_EQ(c.name, "googlenet");
    EXPECT_EQ(c.num_classes, 10);
    auto target = create_architecture("googlenet", 10);
    LoadReport r = load_into(*target, "googlenet", *sd, {});
    EXPECT_TRUE(r.clean()) << r.details();
    EXPECT_EQ(r.loaded, plain.size());
  }
  LoadReport r = load_into(*create_architecture("googlenet", 10), "googlenet", with_aux, {});
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("2 tensors"), std::string::npos) << r.notes[0];

  StateDict stray = plain;
  stray.entries.push_back({"aux3.fc.weight", at::zeros({10, 4})});
  stray.entries.push_back({"AuxLogits.fc.weight", at::zeros({10, 768})});  // inception_v3's, not googlenet's
  EXPECT_THROW(detect_architecture(stray), ModelError);
  LoadOptions lenient;
  lenient.strict = false;
  LoadReport bad = load_into(*create_architecture("googlenet", 10), "googlenet", stray, lenient);
  EXPECT_EQ(bad.unexpected, (std::vector<std::string>{"aux3.fc.weight", "AuxLogits.fc.weight"}));
  EXPECT_THROW(load_into(*create_architecture("googlenet", 10), "googlenet", stray, {}), ModelError);
}

TEST(Registry, PositionTableFixesTheInputSize) {
  auto m = create_architecture("vit_b_32", 5, 96);  // 3x3 patches + the class token
  EXPECT_EQ(m->fixed_input_size(), 96);
  EXPECT_EQ(m->named_parameters()["encoder.pos_embedding"].sizes(), (at::IntArrayRef{1, 10, 768}));
  {
    at::NoGradGuard ng;
    EXPECT_EQ(m->forward(at::zeros({2, 3, 96, 96})).sizes(), (at::IntArrayRef{2, 5}));
    EXPECT_THROW(m->forward(at::zeros({1, 3, 64, 64})), ModelError);
  }
  EXPECT_THROW(create_architecture("vit_b_32", 5, 100), ModelError);  // not whole patches

  // Detection takes any square grid, and reads the size from it.
  StateDict sd = state_of(*m);
  Candidate c = detect_architecture(sd);
  EXPECT_EQ(c.name, "vit_b_32");
  EXPECT_EQ(c.num_classes, 5);
  EXPECT_EQ(c.image_size, 96);
  EXPECT_EQ(input_size_of("vit_b_32", sd), 96);
  EXPECT_EQ(input_size_of("resnet18", sd), 0);
  // 11 tokens are no square grid plus the class token.
  for (auto& e : sd.entries)
    if (e.name == "encoder.pos_embedding") e.tensor = at::zeros({1, 11, 768});
  EXPECT_THROW(detect_architecture(sd), ModelError);
  EXPECT_EQ(input_size_of("vit_b_32", sd), 0);
}

// DeiT distilled: the class and distillation tokens lead the position
// table (detection reads the size past both), the logits are the two heads'
// mean, and a head trained on the features (their mean) written to both
// heads gives the same logits as that head on the features.
TEST(Registry, DistilledDeiTHasTwoTokensAndTwoHeads) {
  auto m = create_architecture("deit_tiny_distilled_patch16_224", 6, 64);  // 4x4 patches + 2 tokens
  EXPECT_EQ(m->named_parameters()["pos_embed"].sizes(), (at::IntArrayRef{1, 18, 192}));
  StateDict sd = state_of(*m);
  Candidate c = detect_architecture(sd);
  EXPECT_EQ(c.name, "deit_tiny_distilled_patch16_224");
  EXPECT_EQ(c.num_classes, 6);
  EXPECT_EQ(c.image_size, 64);
  EXPECT_TRUE(c.also.empty());
  // Without the distillation head it is no distilled DeiT (nor a ViT).
  StateDict no_dist;
  for (const auto& e : sd.entries)
    if (e.name.rfind("head_dist.", 0) != 0) no_dist.entries.push_back(e);
  EXPECT_THROW(detect_architecture(no_dist), ModelError);

  at::NoGradGuard ng;
  at::Tensor x = at::randn({2, 3, 64, 64});
  at::Tensor tokens = m->embed(x);
  ASSERT_EQ(tokens.sizes(), (at::IntArrayRef{2, 2, 192}));
  auto p = m->named_parameters();
  at::Tensor want = (at::linear(tokens.select(1, 0), p["head.weight"], p["head.bias"]) +
                     at::linear(tokens.select(1, 1), p["head_dist.weight"], p["head_dist.bias"])) / 2;
  EXPECT_LE((m->forward(x) - want).abs().max().item<double>() / std::max(1.0, want.abs().max().item<double>()), 1e-5);
  at::Tensor w = at::randn({6, 192}), b = at::randn({6});
  for (const char* h : {"head", "head_dist"}) {
    p[std::string(h) + ".weight"].copy_(w);
    p[std::string(h) + ".bias"].copy_(b);
  }
  at::Tensor same = at::linear(m->pre_logits(tokens), w, b);
  EXPECT_LE((m->forward(x) - same).abs().max().item<double>() / std::max(1.0, same.abs().max().item<double>()), 1e-5);
  // ptmtrainsink's view: features are the pre-logits, both heads replaced.
  const auto path = (std::filesystem::temp_directory_path() / ("ptm-deit-distilled-" + std::to_string(::getpid()) + ".pth")).string();
  save_state_dict(path, state_of(*m));
  ClassifierOptions o;
  o.model = path;
  o.optimize = false;
  Classifier clf(o);
  std::filesystem::remove(path);
  EXPECT_EQ(clf.info().architecture, "deit_tiny_distilled_patch16_224");
  EXPECT_EQ(clf.head_prefixes(), (std::vector<std::string>{"head", "head_dist"}));
  EXPECT_EQ(clf.feature_size(), 192);
  EXPECT_LE((clf.features(x) - m->pre_logits(tokens)).abs().max().item<double>(), 1e-5);
}

TEST(KeyRules, ViTMlpKeysOfOldTorchvision) {
  StateDict sd;
  for (const char* k : {"encoder.layers.encoder_layer_0.mlp.linear_1.weight", "encoder.layers.encoder_layer_11.mlp.linear_2.bias",
                        "features.mlp.linear_1.weight"})
    sd.entries.push_back({k, at::ones({2})});
  const auto path = (std::filesystem::temp_directory_path() / "ptm-old-vit-keys.pth").string();
  save_state_dict(path, sd);
  Checkpoint ck = read_checkpoint(path);
  std::filesystem::remove(path);
  std::vector<std::string> names;
  for (const auto& e : ck.state.entries) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"encoder.layers.encoder_layer_0.mlp.0.weight",
                                             "encoder.layers.encoder_layer_11.mlp.3.bias",
                                             "features.mlp.linear_1.weight"}));
  bool noted = false;
  for (const auto& n : ck.notes) noted = noted || n.find("mlp.linear_1") != std::string::npos;
  EXPECT_TRUE(noted);
}

}  // namespace

void register_dynamic_tests() {}

}  // namespace ptm::test
