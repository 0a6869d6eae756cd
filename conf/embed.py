#!/usr/bin/env python3
"""Turn a text file into a C source file defining a byte array (build step)."""
import sys

src, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(src, 'rb').read()
with open(out, 'w') as f:
    f.write('#include <stddef.h>\n\n')
    f.write('const char %s[] = {\n' % name)
    for i in range(0, len(data), 12):
        f.write('    ' + ', '.join('0x%02x' % b for b in data[i:i + 12]) + ',\n')
    f.write('    0x00\n};\n')
    f.write('const size_t %s_len = %d;\n' % (name, len(data)))
