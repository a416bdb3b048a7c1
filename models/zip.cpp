#include "zip.h"

#include <zlib.h>

#include <algorithm>
#include <system_error>
#include <thread>

namespace ptm {

namespace {
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kDescriptorSig = 0x08074b50;
constexpr uint32_t kFlagDescriptor = 1u << 3;  // sizes and CRC follow the data

// Reads the sizes a zip64 extra field holds for the fields set to
// 0xFFFFFFFF, in the order the format gives them.
void read_zip64(const uint8_t* p, size_t n, const std::string& what, uint64_t* usize, uint64_t* csize,
                uint64_t* local) {
  Cursor extra(p, n, what + " (extra field)");
  while (extra.remaining() >= 4) {
    uint16_t id = extra.u16(), len = extra.u16();
    Cursor f(extra.take(len), len, what + " (zip64 field)");
    if (id != 0x0001) continue;
    if (usize && *usize == 0xFFFFFFFF) *usize = f.u64();
    if (csize && *csize == 0xFFFFFFFF) *csize = f.u64();
    if (local && *local == 0xFFFFFFFF) *local = f.u64();
  }
}

// Checks a stored entry's local header (and data descriptor) against its
// central directory record, sets its data offset and returns where the
// entry ends. `limit`: where the central directory begins.
uint64_t check_local(const Bytes& file, ZipEntry& e, uint64_t local, uint64_t limit, const std::string& what) {
  Cursor lh(file.begin(), limit, what);
  lh.seek(local);
  if (lh.u32() != kLocalSig) lh.fail("bad local header");
  lh.u16();
  const uint16_t flags = lh.u16(), method = lh.u16();
  lh.u32();
  const uint32_t crc = lh.u32();
  uint64_t csize = lh.u32(), usize = lh.u32();
  const uint16_t ln = lh.u16(), le = lh.u16();
  if (lh.str(ln) != e.name) lh.fail("local header names another entry");
  if (method != e.method) lh.fail("local header and central directory disagree on the compression method");
  read_zip64(lh.take(le), le, what, &usize, &csize, nullptr);
  e.data_offset = lh.pos();
  uint64_t end;
  if (add_overflows(e.data_offset, e.size, &end) || end > limit)
    lh.fail("declares " + std::to_string(e.size) + " bytes but the file holds only " +
            std::to_string(limit > e.data_offset ? limit - e.data_offset : 0));
  if (!(flags & kFlagDescriptor)) {
    if (crc != e.crc32 || csize != e.size || usize != e.size)
      lh.fail("local header and central directory disagree on the size or CRC (the file is corrupt)");
    return end;
  }
  // The descriptor: an optional signature, the CRC, then 32- or 64-bit sizes.
  Cursor d(file.begin(), limit, what + " data descriptor");
  d.seek(end);
  if (d.remaining() >= 4 && d.u32() != kDescriptorSig) d.seek(end);
  if (d.u32() != e.crc32) d.fail("does not match the central directory (CRC); the file is corrupt");
  const size_t sizes = d.pos();
  if (d.remaining() >= 8 && d.u32() == e.size && d.u32() == e.size) return d.pos();
  d.seek(sizes);
  if (d.remaining() >= 16 && d.u64() == e.size && d.u64() == e.size) return d.pos();
  d.fail("does not match the central directory's size of " + std::to_string(e.size) + " bytes; the file is corrupt");
}
}  // namespace

bool looks_like_zip(const std::string& head) { return head.rfind("PK\x03\x04", 0) == 0; }

ZipArchive::ZipArchive(Bytes file, std::string path) : file_(std::move(file)), path_(std::move(path)) {
  Cursor c(file_.begin(), file_.size, "'" + path_ + "' (zip)");
  const uint8_t* base = file_.begin();
  const size_t n = file_.size;
  if (n < 22) c.fail("too short to be a zip archive");
  // The end-of-central-directory record sits in the last 64 KiB + 22 bytes.
  size_t lo = n > 65557 ? n - 65557 : 0;
  size_t eocd = SIZE_MAX;
  for (size_t p = n - 22 + 1; p-- > lo;) {
    uint32_t sig;
    std::memcpy(&sig, base + p, 4);
    if (sig == kEocdSig) {
      eocd = p;
      break;
    }
  }
  if (eocd == SIZE_MAX) c.fail("no end-of-central-directory record (truncated or not a zip)");
  c.seek(eocd + 10);
  uint64_t count = c.u16();
  uint64_t cd_size = c.u32();
  uint64_t cd_offset = c.u32();
  if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
    if (eocd < 20) c.fail("zip64 locator missing");
    c.seek(eocd - 20);
    if (c.u32() != kZip64LocatorSig) c.fail("zip64 locator missing");
    c.u32();
    uint64_t z64 = c.u64();
    c.seek(z64);
    if (c.u32() != kZip64EocdSig) c.fail("zip64 end record missing");
    c.u64();
    c.u16();
    c.u16();
    c.u32();
    c.u32();
    c.u64();
    count = c.u64();
    cd_size = c.u64();
    cd_offset = c.u64();
  }
  uint64_t cd_end;
  if (add_overflows(cd_offset, cd_size, &cd_end) || cd_end > n)
    c.fail("central directory lies outside the file");
  if (count > cd_size / 46) c.fail("central directory entry count is inconsistent");
  entries_.reserve(count);
  struct Span {
    uint64_t begin, end;
    size_t entry;
    bool operator<(const Span& o) const { return begin < o.begin; }
  };
  std::vector<Span> spans;
  c.seek(cd_offset);
  for (uint64_t k = 0; k < count; ++k) {
    if (c.u32() != kCentralSig) c.fail("bad central directory entry " + std::to_string(k));
    c.take(6);
    ZipEntry e;
    e.method = c.u16();
    c.take(4);
    e.crc32 = c.u32();
    uint64_t csize = c.u32();
    uint64_t usize = c.u32();
    uint16_t name_len = c.u16(), extra_len = c.u16(), comment_len = c.u16();
    c.take(8);
    uint64_t local = c.u32();
    e.name = c.str(name_len);
    read_zip64(c.take(extra_len), extra_len, "'" + path_ + "' (zip entry '" + e.name + "')", &usize, &csize, &local);
    c.take(comment_len);
    e.size = usize;
    if (e.method == 0) {
      if (csize != usize) c.fail("entry '" + e.name + "' has inconsistent sizes");
      const uint64_t end = check_local(file_, e, local, cd_offset, "'" + path_ + "' (zip entry '" + e.name + "')");
      spans.push_back({local, end, entries_.size()});
    }
    if (!index_.emplace(e.name, entries_.size()).second) c.fail("entry '" + e.name + "' appears twice");
    entries_.push_back(std::move(e));
  }
  // Entries may not share bytes: a damaged offset or size shows up here
  // even where no CRC was written.
  std::sort(spans.begin(), spans.end());
  for (size_t k = 1; k < spans.size(); ++k)
    if (spans[k].begin < spans[k - 1].end)
      c.fail("entries '" + entries_[spans[k - 1].entry].name + "' and '" + entries_[spans[k].entry].name + "' overlap");
  bool any = false, all_zero = true;
  for (const auto& e : entries_) {
    if (e.method != 0 || e.size == 0) continue;
    any = true;
    all_zero &= e.crc32 == 0;
  }
  crc_absent_ = any && all_zero;
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* ZipArchive::data(const ZipEntry& e, bool verify) const {
  if (e.method != 0)
    throw ModelError("'" + path_ + "': entry '" + e.name +
                     "' is compressed; PyTorch archives store entries uncompressed");
  const uint8_t* p = file_.begin() + e.data_offset;
  if (verify && !crc_absent_) {
    uLong crc = crc32_z(0L, Z_NULL, 0);
    crc = crc32_z(crc, p, e.size);
    if (uint32_t(crc) != e.crc32)
      throw ModelError("'" + path_ + "': entry '" + e.name +
                       "' fails its CRC check (the file is corrupt)");
  }
  return p;
}

void ZipArchive::verify_all() const {
  if (crc_absent_) return;  // nothing to compare with
  // Split large entries into 4 MiB pieces combined with crc32_combine so
  // one big tensor does not serialise the check.
  constexpr uint64_t kPiece = 4u << 20;
  struct Piece {
    size_t entry;
    uint64_t offset, size;
  };
  std::vector<Piece> pieces;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const ZipEntry& e = entries_[i];
    if (e.method != 0) continue;
    for (uint64_t off = 0; off < e.size || (off == 0 && e.size == 0); off += kPiece) {
      pieces.push_back({i, off, std::min(kPiece, e.size - off)});
      if (e.size == 0) break;
    }
  }
  std::vector<uint32_t> crcs(pieces.size());
  auto work = [&](size_t first, size_t step) {
    for (size_t k = first; k < pieces.size(); k += step) {
      const Piece& p = pieces[k];
      const uint8_t* d = file_.begin() + entries_[p.entry].data_offset + p.offset;
      crcs[k] = uint32_t(crc32_z(crc32_z(0L, Z_NULL, 0), d, p.size));
    }
  };
  // CRC is compute-bound (~6 GB/s a core): worth a second thread only for
  // files of tens of megabytes.
  const size_t threads = file_.size > (32u << 20) ? std::min<size_t>(4, std::max(1u, std::thread::hardware_concurrency())) : 1;
  std::vector<std::thread> helpers;
  size_t t = 1;
  for (; t < threads; ++t) {
    try {
      helpers.emplace_back(work, t, threads);
    } catch (const std::system_error&) {
      break;  // no thread to be had (address space or thread limits): this one does the rest
    }
  }
  for (; t < threads; ++t) work(t, threads);
  work(0, threads);
  for (auto& h : helpers) h.join();
  size_t k = 0;
  while (k < pieces.size()) {
    const ZipEntry& e = entries_[pieces[k].entry];
    uLong crc = crcs[k];
    size_t j = k + 1;
    for (; j < pieces.size() && pieces[j].entry == pieces[k].entry; ++j)
      crc = crc32_combine64(crc, crcs[j], z_off64_t(pieces[j].size));
    if (uint32_t(crc) != e.crc32)
      throw ModelError("'" + path_ + "': entry '" + e.name + "' fails its CRC check (the file is corrupt)");
    k = j;
  }
}

}  // namespace ptm
