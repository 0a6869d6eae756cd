#ifndef PROXY_MAIN_H
#define PROXY_MAIN_H
int main_run(int argc, char **argv);
#endif
