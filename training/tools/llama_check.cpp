// Optional cross-check of an exported GGUF with llama.cpp itself (the library Ponder's engine
// embeds). Reads a prompt from a file, tokenises it with parse_special = true (no BOS), prints
// the token ids, then either greedily decodes N tokens ("greedy"), or prints P(+) over {+,-} at
// every <|step|> position ("prm").
//
// Build (CPU), against the llama.cpp vendored by llama-cpp-sys-2:
//   see training/README.md ("Cross-check with llama.cpp").
// Usage: llama_check MODEL.gguf PROMPT_FILE greedy N | prm

#include "llama.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL PROMPT_FILE greedy N | prm\n", argv[0]);
        return 2;
    }
    std::ifstream f(argv[2], std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string prompt = ss.str();
    const std::string mode = argv[3];
    const int n_predict = argc > 4 ? atoi(argv[4]) : 0;

    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    std::vector<llama_token> toks(prompt.size() + 16);
    int n = llama_tokenize(vocab, prompt.c_str(), prompt.size(), toks.data(), toks.size(),
                           /*add_special*/ false, /*parse_special*/ true);
    if (n < 0) { fprintf(stderr, "tokenize failed\n"); return 1; }
    toks.resize(n);
    printf("TOKENS");
    for (auto t : toks) printf(" %d", t);
    printf("\n");

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 2048;
    cp.n_batch = 2048;
    cp.n_ubatch = 2048;
    cp.n_threads = 2;
    llama_context * ctx = llama_init_from_model(model, cp);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    llama_batch batch = llama_batch_init(2048, 0, 1);
    batch.n_tokens = n;
    for (int i = 0; i < n; i++) {
        batch.token[i] = toks[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = mode == "prm" || i == n - 1;
    }
    if (llama_decode(ctx, batch)) { fprintf(stderr, "decode failed\n"); return 1; }

    if (mode == "prm") {
        printf("REWARDS");
        for (int i = 0; i < n; i++) {
            if (toks[i] != 259) continue;  // <|step|>
            const float * lg = llama_get_logits_ith(ctx, i);
            const float a = lg['+'], b = lg['-'];
            printf(" %.6f", 1.0 / (1.0 + std::exp(b - a)));
        }
        printf("\n");
    } else {
        std::string out;
        int pos = n;
        for (int k = 0; k < n_predict; k++) {
            const float * lg = llama_get_logits_ith(ctx, -1);
            int best = 0;
            for (int j = 1; j < n_vocab; j++) if (lg[j] > lg[best]) best = j;
            char buf[64];
            int m = llama_token_to_piece(vocab, best, buf, sizeof(buf), 0, true);
            out.append(buf, m > 0 ? m : 0);
            if (llama_vocab_is_eog(vocab, best)) break;
            llama_batch one = llama_batch_get_one(&best, 1);
            (void) pos;
            pos++;
            if (llama_decode(ctx, one)) { fprintf(stderr, "decode failed\n"); return 1; }
        }
        printf("GREEDY_BEGIN\n%s\nGREEDY_END\n", out.c_str());
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
