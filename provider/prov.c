/* being written */ typedef int p11t_placeholder_prov;
