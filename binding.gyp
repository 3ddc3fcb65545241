{
  "targets": [
    {
      "target_name": "mountgate",
      "sources": ["src/native/addon.c", "src/native/helpers.c", "src/native/socket.c", "src/native/hash.c"],
      "cflags": ["-Wall", "-Wextra", "-O2", "-D_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11"]
    },
    {
      "target_name": "mountgate-nshelper",
      "type": "executable",
      "sources": ["src/native/nshelper.c"],
      "cflags": ["-Wall", "-Wextra", "-O2", "-D_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11"]
    }
  ]
}
