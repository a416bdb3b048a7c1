/* The gstptm plugin module: a loader, in C, for the elements' library
 * (libgstptm-elements.so.0, beside it).
 *
 * A process can hold two C++ unwinders: libunwind, which libgstreamer
 * links, and libgcc_s, which libstdc++ links. Every C++ library in the
 * process must unwind with the one libstdc++ throws with, or the first C++
 * exception (any element error) aborts the process. Where libstdc++ was
 * bound to libgcc_s before libunwind came into the global scope (Python:
 * `import torch` before `from gi.repository import Gst`), a library loaded
 * plainly would be bound to libunwind: the elements' library is then loaded
 * with RTLD_DEEPBIND, so that it and the libraries it brings resolve the
 * unwinder to libgcc_s, as libstdc++ does. Otherwise (gst-launch-1.0, C and
 * C++ applications, Python importing Gst first) it is loaded plainly, and
 * binds to whatever libstdc++ uses. This module itself links no C++: it
 * must not load libstdc++ before that decision. */
#define _GNU_SOURCE
#include <gst/gst.h>

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <string.h>

GST_DEBUG_CATEGORY_STATIC (ptm_loader_debug);
#define GST_CAT_DEFAULT ptm_loader_debug

#define ELEMENTS_LIBRARY "libgstptm-elements.so.0"

typedef struct
{
  ElfW (Addr) base;
  const ElfW (Phdr) * phdr;
  ElfW (Half) phnum;
  int found;
} ObjectInfo;

static int
find_libstdcxx (struct dl_phdr_info *info, size_t size, void *data)
{
  ObjectInfo *o = data;
  (void) size;
  if (!info->dlpi_name || !strstr (info->dlpi_name, "libstdc++.so"))
    return 0;
  o->base = info->dlpi_addr;
  o->phdr = info->dlpi_phdr;
  o->phnum = info->dlpi_phnum;
  o->found = 1;
  return 1;
}

/* The dynamic section's pointers: glibc relocates them in place on most
 * architectures, not on all (read-only dynamic sections). */
static ElfW (Addr)
dyn_ptr (ElfW (Addr) value, ElfW (Addr) base)
{
  return value < base ? value + base : value;
}

/* Where libstdc++'s call to _Unwind_RaiseException goes (the file of the
 * function its GOT slot holds), or NULL where libstdc++ is not loaded or
 * the slot is not bound yet (it will then bind as a library loaded now). */
static const char *
libstdcxx_unwinder (void)
{
  ObjectInfo o = { 0 };
  const ElfW (Dyn) * dyn = NULL;
  const ElfW (Sym) * symtab = NULL;
  const char *strtab = NULL;
  const ElfW (Rela) * tables[2] = { NULL, NULL };
  size_t sizes[2] = { 0, 0 };
  ElfW (Half) i;
  int t;

  dl_iterate_phdr (find_libstdcxx, &o);
  if (!o.found)
    return NULL;
  for (i = 0; i < o.phnum; ++i)
    if (o.phdr[i].p_type == PT_DYNAMIC)
      dyn = (const ElfW (Dyn) *) (o.base + o.phdr[i].p_vaddr);
  if (!dyn)
    return NULL;
  for (; dyn->d_tag != DT_NULL; ++dyn) {
    switch (dyn->d_tag) {
      case DT_SYMTAB:
        symtab = (const ElfW (Sym) *) dyn_ptr (dyn->d_un.d_ptr, o.base);
        break;
      case DT_STRTAB:
        strtab = (const char *) dyn_ptr (dyn->d_un.d_ptr, o.base);
        break;
      case DT_JMPREL:
        tables[0] = (const ElfW (Rela) *) dyn_ptr (dyn->d_un.d_ptr, o.base);
        break;
      case DT_PLTRELSZ:
        sizes[0] = dyn->d_un.d_val;
        break;
      case DT_RELA:
        tables[1] = (const ElfW (Rela) *) dyn_ptr (dyn->d_un.d_ptr, o.base);
        break;
      case DT_RELASZ:
        sizes[1] = dyn->d_un.d_val;
        break;
      case DT_PLTREL:
        if (dyn->d_un.d_val != DT_RELA)
          return NULL;          /* REL-only architectures: not read */
        break;
      default:
        break;
    }
  }
  if (!symtab || !strtab)
    return NULL;
  for (t = 0; t < 2; ++t) {
    size_t n = tables[t] ? sizes[t] / sizeof (ElfW (Rela)) : 0, r;
    for (r = 0; r < n; ++r) {
#if __ELF_NATIVE_CLASS == 64
      const size_t sym = ELF64_R_SYM (tables[t][r].r_info);
#else
      const size_t sym = ELF32_R_SYM (tables[t][r].r_info);
#endif
      Dl_info where;
      void *target;
      if (sym == 0
          || strcmp (strtab + symtab[sym].st_name, "_Unwind_RaiseException"))
        continue;
      target = *(void **) (o.base + tables[t][r].r_offset);
      if (!target || !dladdr (target, &where) || !where.dli_fname
          || strstr (where.dli_fname, "libstdc++.so"))
        return NULL;            /* a lazy slot, still pointing into its PLT */
      return where.dli_fname;
    }
  }
  return NULL;
}

static const char *
global_unwinder (void)
{
  Dl_info where;
  void *f = dlsym (RTLD_DEFAULT, "_Unwind_RaiseException");
  if (!f || !dladdr (f, &where) || !where.dli_fname)
    return NULL;
  return where.dli_fname;
}

static gboolean
plugin_init (GstPlugin * plugin)
{
  typedef gboolean (*RegisterFunc) (GstPlugin *);
  Dl_info self;
  gchar *dir, *path;
  const char *stdcxx, *global;
  gboolean deep;
  void *handle;
  RegisterFunc reg;

  GST_DEBUG_CATEGORY_INIT (ptm_loader_debug, "ptmloader", 0,
      "ptm plugin loader");
  if (!dladdr ((void *) plugin_init, &self) || !self.dli_fname) {
    GST_ERROR ("cannot tell where the ptm plugin was loaded from");
    return FALSE;
  }
  dir = g_path_get_dirname (self.dli_fname);
  path = g_build_filename (dir, ELEMENTS_LIBRARY, NULL);
  g_free (dir);

  stdcxx = libstdcxx_unwinder ();
  global = global_unwinder ();
  deep = stdcxx && strstr (stdcxx, "libgcc_s") && global
      && !strstr (global, "libgcc_s");
  GST_INFO ("libstdc++ unwinds with %s, the global scope's unwinder is %s: "
      "loading %s%s", stdcxx ? stdcxx : "(not bound yet)",
      global ? global : "(none)", path, deep ? " with RTLD_DEEPBIND" : "");
  if (stdcxx && global && !deep && strcmp (stdcxx, global) != 0
      && strstr (global, "libgcc_s"))
    g_warning ("ptm: libstdc++ unwinds with %s, not %s: a C++ error inside "
        "ptm may crash this process", stdcxx, global);

  handle = dlopen (path, RTLD_NOW | RTLD_LOCAL | (deep ? RTLD_DEEPBIND : 0));
  if (!handle) {
    const char *err = dlerror ();
    GST_ERROR ("cannot load the ptm elements (%s): %s", path, err);
    g_warning ("ptm: cannot load %s: %s", path, err);
    g_free (path);
    return FALSE;
  }
  g_free (path);
  reg = (RegisterFunc) dlsym (handle, "ptm_register_elements");
  if (!reg) {
    GST_ERROR ("%s has no ptm_register_elements", ELEMENTS_LIBRARY);
    return FALSE;
  }
  /* Never unloaded: the element types live in it. */
  return reg (plugin);
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, ptm,
    "Run PyTorch image classifiers in GStreamer pipelines", plugin_init,
    PTM_VERSION, "LGPL", "ptm", "https://github.com/ptm")
