# Regenerates the checkpoints in this directory with transformers (5.17 made the committed
# ones): random weights for each config, then transformers' logits on a left-padded batch and
# greedy tokens for two left-padded prompts, in each case's expect.json. It writes to /tmp/c
# and packs the result into $OUT/c.tar; unpack it here.
python3 - <<'P'
import torch,json
from transformers import AutoModelForCausalLM as A,LlamaConfig as L,Qwen2Config as Q,MistralConfig as M
O='/tmp/c';torch.manual_seed(0);F=lambda t:t.flatten().tolist()
B=dict(vocab_size=96,hidden_size=32,intermediate_size=48,num_hidden_layers=2,num_attention_heads=4,num_key_value_heads=2,head_dim=8,max_position_embeddings=64,rms_norm_eps=1e-5,initializer_range=.2,eos_token_id=1)
R=lambda t,**k:dict(rope_parameters=dict(rope_type=t,rope_theta=1e4,**k))
C={'llama_tied_gqa3_llama3':(L,dict(num_attention_heads=6,hidden_size=48,head_dim=16,tie_word_embeddings=True,rope_parameters=dict(rope_type='llama3',rope_theta=5e5,factor=8.,low_freq_factor=1.,high_freq_factor=4.,original_max_position_embeddings=16))),
'llama_biases_linear':(L,dict(num_key_value_heads=4,attention_bias=True,mlp_bias=True,**R('linear',factor=2.))),
'llama_dynamic':(L,dict(max_position_embeddings=8,**R('dynamic',factor=2.))),
'qwen2_kv1_window':(Q,dict(num_key_value_heads=1,use_sliding_window=True,sliding_window=4,max_window_layers=1)),
'mistral_window':(M,dict(sliding_window=3))}
for n,(K,kw) in C.items():
 m=A.from_config(K(**{**B,**kw}),attn_implementation='eager').float().eval()
 with torch.no_grad():
  for p in m.parameters():p.add_(torch.randn_like(p)*.1)
 d=f'{O}/{n}';m.save_pretrained(d)
 ids=torch.randint(2,96,(2,12));ids[1,:3]=0;mk=torch.ones(2,12,dtype=torch.long);mk[1,:3]=0
 pos=(mk.cumsum(1)-1).clamp(min=0);pos[mk==0]=1
 p0=ids[0,:7].tolist();p1=ids[1,3:8].tolist()
 pid=torch.tensor([p0,[0,0]+p1]);pm=torch.tensor([[1]*7,[0,0]+[1]*5])
 m.generation_config.eos_token_id=None
 with torch.no_grad():
  z=m(input_ids=ids,attention_mask=mk,position_ids=pos).logits
  g=m.generate(input_ids=pid,attention_mask=pm,max_new_tokens=8,do_sample=False,pad_token_id=0)
 json.dump(dict(input_ids=F(ids),attention_mask=F(mk),position_ids=F(pos),logits=F(z),prompts=[p0,p1],greedy=g[:,7:].tolist()),open(d+'/expect.json','w'))
P
tar -C /tmp/c -cf $OUT/c.tar .
