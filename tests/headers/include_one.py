#!/usr/bin/env python3
"""Build step: write a C file that includes one header and nothing else,
so that a header that does not compile on its own fails the build."""
import os
import sys

header, out = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    f.write('#include "%s"\n' % os.path.basename(header))
    f.write("int header_check_%s;\n" %
            os.path.basename(header).replace(".", "_").replace("-", "_"))
