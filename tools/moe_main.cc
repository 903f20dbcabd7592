// The `moe` command line: dispatches to a subcommand.
#include <cstdio>
int main(int argc, char** argv) {
  std::fprintf(stderr, "moe: not built yet\n");
  return 1;
}
