/* embed: writes a C source file that defines a byte array holding a file.
 * usage: embed INPUT SYMBOL OUTPUT.c
 * Defines `const unsigned char SYMBOL[]` and `const size_t SYMBOL_len`. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: embed INPUT SYMBOL OUTPUT.c\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (!in) {
        perror(argv[1]);
        return 1;
    }
    FILE *out = fopen(argv[3], "w");
    if (!out) {
        perror(argv[3]);
        fclose(in);
        return 1;
    }
    fprintf(out, "#include <stddef.h>\nconst unsigned char %s[] = {", argv[2]);
    size_t n = 0;
    int c;
    while ((c = fgetc(in)) != EOF) {
        fprintf(out, "%s0x%02x,", (n % 16) ? "" : "\n", (unsigned)c);
        n++;
    }
    fprintf(out, "\n0};\nconst size_t %s_len = %zu;\n", argv[2], n);
    int bad = ferror(in) || ferror(out);
    fclose(in);
    if (fclose(out) != 0) bad = 1;
    return bad ? 1 : 0;
}
